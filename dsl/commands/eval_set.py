"""dsl eval-set check FILE / dsl eval-set export FILE --format lm-eval --out DIR"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click


def _items(file: str, fields: tuple[str, ...], fmt: str) -> list[Any]:
    from sdk.evalsets import load_items
    from sdk.spec import EvalBlock

    mapping = dict(f.split("=", 1) for f in fields)
    block = EvalBlock(data=file, format=fmt, fields=mapping, systems=["base_model.x"])  # type: ignore[arg-type]
    return load_items(Path(file), block, file)


_fields = click.option("--field", "fields", multiple=True, metavar="NAME=COLUMN",
                       help="Map a column, e.g. --field question=QUESTION --field label=final_decision (repeatable).")
_format = click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "json", "tsv"]), default="auto",
                       help="File format (default: by extension).")


@click.group("eval-set")
def command() -> None:
    """Check an eval set, or export it (e.g. to lm-evaluation-harness)."""


@command.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_fields
@_format
@click.option("--train", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training data (JSONL or text) to look for leaked questions in (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def check(file: str, fields: tuple[str, ...], fmt: str, train: tuple[str, ...], as_json: bool) -> None:
    """Validate an eval set before spending compute on it. Exit 1 on errors."""
    from sdk.evalsets import check as run_check

    items = _items(file, fields, fmt)
    texts: list[str] = []
    for t in train:
        for line in Path(t).read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                texts.append(" ".join(str(v) if not isinstance(v, list) else " ".join(
                    m.get("content", "") if isinstance(m, dict) else str(m) for m in v) for v in row.values()))
            except (json.JSONDecodeError, AttributeError):
                texts.append(line)
    findings = run_check(items, texts)
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        click.echo(json.dumps({"file": file, "items": len(items), "errors": len(errors),
                               "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        for f in findings:
            loc = f"{file}:{f.line}" if f.line else file
            click.echo(f"{loc}: {f.severity}: {f.message}" + (f" (item {f.item})" if f.item else ""), err=f.severity == "error")
        click.echo(f"{file}: {len(items)} items, {len(errors)} errors, {len(findings) - len(errors)} warnings")
    if errors:
        raise SystemExit(1)


@command.command("export")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "target", type=click.Choice(["lm-eval"]), default="lm-eval", help="Export format.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--task", default=None, help="Task name (default: the file's stem).")
@_fields
@click.option("--input-format", "fmt", type=click.Choice(["auto", "jsonl", "json", "tsv"]), default="auto")
def export(file: str, target: str, out: str, task: Optional[str], fields: tuple[str, ...], fmt: str) -> None:
    """Write an lm-evaluation-harness task (YAML + JSONL) that lm_eval runs as it is."""
    from sdk.evalsets import export_lm_eval

    items = _items(file, fields, fmt)
    name = task or Path(file).stem.replace("-", "_")
    path = export_lm_eval(items, Path(out), name)
    click.echo(f"wrote {path} and {path.with_suffix('.jsonl')} ({len(items)} items): "
               f"lm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks {name}")
