"""dsl eval-set check FILE / dsl eval-set export FILE --format lm-eval --out DIR"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click


def _block(file: str | None, fields: tuple[str, ...], fmt: str, password_env: str | None,
           spec_file: str | None, name: str | None) -> tuple[Path, str, Any, Any]:
    """(data path, name shown in messages, eval block, spec or None) from the options."""
    from sdk.errors import DslError
    from sdk.spec import EvalBlock

    if spec_file:
        from dsl.parser import load_recipe

        spec = load_recipe(spec_file).spec
        labels = list(spec.eval)
        label = (name or "").removeprefix("eval.") or (labels[0] if len(labels) == 1 else "")
        if label not in spec.eval:
            raise DslError(f"{spec_file}: choose an eval block with --eval NAME (have: {', '.join(labels) or 'none'})")
        block = spec.eval[label]
        if fields or fmt != "auto" or password_env:
            raise DslError("--field/--format/--password-env come from the recipe's eval block when --spec is given")
        if not file and not isinstance(block.data, str):
            raise DslError(f"eval.{label} reads {block.data}, the candidates experts accepted, not a file: see them "
                           f"with dsl review export, or give the FILE to check")
        path = Path(file) if file else spec.resolve_path(block.data)
        return path, file or block.data, block, spec
    if not file:
        raise DslError("give the eval set FILE, or --spec RECIPE --eval NAME")
    mapping: dict[str, Any] = {}
    for f in fields:
        for part in f.split(","):
            if "=" not in part:
                raise DslError(f"--field expects NAME=COLUMN, got {part!r}")
            key, value = part.split("=", 1)
            mapping[key.strip()] = value.strip() or None
    from pydantic import ValidationError

    try:
        block = EvalBlock(data=file, format=fmt, fields=mapping, systems=["base_model.x"],  # type: ignore[arg-type]
                          password={"env": password_env} if password_env else None)
    except ValidationError as e:  # e.g. an unknown field name
        err = e.errors()[0]
        raise DslError(f"bad --field mapping: {'.'.join(str(x) for x in err['loc'])}: {err['msg']} "
                       "(names: id, question, answer, choices, label, context, sources, answer_pattern)") from None
    if password_env and not os.environ.get(password_env):
        raise DslError(f"--password-env {password_env}: the variable is not set")
    return Path(file), file, block, None


def _items(file: str | None, fields: tuple[str, ...], fmt: str, password_env: str | None = None,
           spec_file: str | None = None, name: str | None = None) -> tuple[list[Any], str, Any, Any]:
    from sdk.evalsets import load_items

    path, shown, block, spec = _block(file, fields, fmt, password_env, spec_file, name)
    if not path.is_file():
        from sdk.errors import DslError

        raise DslError(f"{shown}: no such file")
    return load_items(path, block, shown), shown, block, spec


def _train_texts(path: Path) -> list[str]:
    """Texts of a training file: JSONL rows (chat messages, instruction fields, text) or plain text lines."""
    texts: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            texts.append(line)
            continue
        if not isinstance(row, dict):
            texts.append(line)
            continue
        parts = []
        for v in row.values():
            if isinstance(v, list):
                parts += [str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in v]
            elif isinstance(v, str):
                parts.append(v)
        texts.append(" ".join(parts))
    return texts


_fields = click.option("--field", "--fields", "fields", multiple=True, metavar="NAME=COLUMN",
                       help="Map a column, e.g. --field question=QUESTION --field label=final_decision "
                            "(repeatable, or comma-separated). Names: id, question, answer, choices "
                            "(a list column or a glob such as 'option *'), label, context, sources, answer_pattern.")
_password = click.option("--password-env", metavar="NAME", help="Environment variable holding the zip password.")
_spec = click.option("--spec", "spec_file", type=click.Path(dir_okay=False), metavar="RECIPE",
                     help="Take the file, format and field mapping from an eval block of this recipe.")
_eval = click.option("--eval", "name", metavar="NAME", help="The eval block of --spec (default: the only one).")


@click.group("eval-set")
def command() -> None:
    """Check an eval set, or export it (e.g. to lm-evaluation-harness)."""


@command.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@_fields
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "json", "tsv"]), default="auto",
              help="File format (default: by extension).")
@_password
@_spec
@_eval
@click.option("--train", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training data (JSONL or text) to look for leaked questions in (repeatable).")
@click.option("--ngram", default=13, show_default=True, help="n of the n-gram overlap check.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(file: str | None, fields: tuple[str, ...], fmt: str, password_env: str | None,
          spec_file: str | None, name: str | None, train: tuple[str, ...], ngram: int, as_json: bool) -> None:
    """Validate an eval set before spending compute on it: duplicates, empty fields, answers not among the
    choices, label imbalance, questions found in the training data. Exit 1 on errors."""
    from sdk.evalsets import check as run_check

    items, shown, _, spec = _items(file, fields, fmt, password_env, spec_file, name)
    train_files = [Path(t) for t in train]
    if spec is not None:  # the SFT data of the recipe's datasets (raw files: no apply needed)
        train_files += [spec.resolve_path(d.path) for d in spec.dataset.values() if spec.resolve_path(d.path).is_file()]
    texts = [t for f in train_files for t in _train_texts(f)]
    findings = run_check(items, texts, ngram)
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        click.echo(json.dumps({"file": shown, "items": len(items), "errors": len(errors),
                               "warnings": len(findings) - len(errors),
                               "train_files": [str(f) for f in train_files],
                               "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        for f in findings:
            loc = f"{shown}:{f.line}" if f.line else shown
            click.echo(f"{loc}: {f.severity}: {f.message}" + (f" (item {f.item})" if f.item else ""),
                       err=f.severity == "error")
        click.echo(f"{shown}: {len(items)} items, {len(errors)} errors, {len(findings) - len(errors)} warnings")
    if errors:
        raise SystemExit(1)


@command.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "target", type=click.Choice(["lm-eval"]), default="lm-eval", show_default=True,
              help="Export format.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--task", default=None, help="Task name (default: the file's stem).")
@click.option("--max-new-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="Longest generated answer (free-answer sets; lm-eval's max_gen_toks).")
@_fields
@click.option("--input-format", "fmt", type=click.Choice(["auto", "jsonl", "json", "tsv"]), default="auto",
              help="Format of FILE (default: by extension).")
@_password
@_spec
@_eval
def export(file: str | None, target: str, out: str, task: str | None, max_new_tokens: int, fields: tuple[str, ...], fmt: str,
           password_env: str | None, spec_file: str | None, name: str | None) -> None:
    """Write an lm-evaluation-harness task (YAML + JSONL) that lm_eval runs as it is."""
    import re

    from sdk.evalsets import export_lm_eval

    items, shown, _, _ = _items(file, fields, fmt, password_env, spec_file, name)
    task_name = task or re.sub(r"\W+", "_", Path(shown).stem).strip("_") or "eval_set"
    path = export_lm_eval(items, Path(out), task_name, max_new_tokens)
    click.echo(f"wrote {path} and {path.with_suffix('.jsonl')} ({len(items)} items); run it with:\n"
               f"  lm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks {task_name}")
