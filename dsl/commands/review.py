"""dsl review export RECIPE LABEL -o FILE  /  dsl review import RECIPE LABEL FILE [--reviewer NAME]

Review decisions on a synth step's rows through a file (JSONL or CSV, by the extension), for experts who work
offline; the page's Review view (dsl ui) writes the same decisions log (sdk.reviews, sdk.reviewio)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from dsl.commands._common import json_option, open_ws, workdir_option


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _open(recipe: str, label: str, workdir: Optional[str]) -> tuple[Any, str, list[dict[str, Any]], Path]:
    from sdk import reviewio as IO

    ws = open_ws(recipe, workdir)
    label = IO.synth_label(ws, label)
    return ws, label, IO.candidates(ws, label), IO.decisions_file(ws, label)


@click.group("review")
def command() -> None:
    """Review a synth step's rows offline: export them with their decisions, import the decisions filled in."""


@command.command("export")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("label")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The file to write: .jsonl or .csv.")
@workdir_option
@json_option
def export_cmd(recipe: str, label: str, out: str, workdir: Optional[str], as_json: bool) -> None:
    """Write synth.LABEL's candidate rows with their current decision (status, decision, reason, reviewer,
    edited_* columns) to a JSONL or CSV file for an expert to fill."""
    from sdk import reviewio as IO
    from sdk import reviews as RV

    IO.file_format(out)
    _, label, rows, decisions_path = _open(recipe, label, workdir)
    decisions = RV.load(decisions_path, _shown(decisions_path))
    n = IO.export_rows(Path(out), rows, decisions)
    counts = RV.counts(rows, decisions)
    if as_json:
        click.echo(json.dumps({"step": f"synth.{label}", "file": out, "format": IO.file_format(out), "rows": n,
                               "by_status": counts, "decisions": str(decisions_path)}, indent=2))
        return
    click.echo(f"{out}: {n} rows of synth.{label} ("
               + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")")
    click.echo(f"Next: fill decision (accept, reject, edit), reason and the edited_ columns, then "
               f"dsl review import {recipe} {label} {out} --reviewer NAME")


@command.command("import")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("label")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--reviewer", help="Who decided (default: each row's reviewer column).")
@workdir_option
@json_option
def import_cmd(recipe: str, label: str, file: str, reviewer: Optional[str], workdir: Optional[str],
               as_json: bool) -> None:
    """Check every line of a filled export (FILE:LINE errors; nothing is written unless all are good), then append
    a decision for each row whose decision, reason or edit changed."""
    from sdk import reviewio as IO
    from sdk import reviews as RV

    IO.file_format(file)
    _, label, rows, decisions_path = _open(recipe, label, workdir)
    decisions = RV.load(decisions_path, _shown(decisions_path))
    if reviewer is not None and not reviewer.strip():
        raise click.BadParameter("the reviewer name is blank", param_hint="--reviewer")
    result = IO.read_import(Path(file), rows, decisions, reviewer=reviewer.strip() if reviewer else None,
                            shown=file)
    RV.append(decisions_path, result["entries"])
    after = RV.counts(rows, RV.load(decisions_path))
    if as_json:
        click.echo(json.dumps({"step": f"synth.{label}", "file": file, "rows": result["rows"],
                               "appended": len(result["entries"]), "unchanged": result["unchanged"],
                               "by_decision": result["by_decision"], "by_status": after,
                               "decisions": str(decisions_path)}, indent=2))
        return
    changed = ", ".join(f"{v} {k}" for k, v in sorted(result["by_decision"].items())) or "none"
    click.echo(f"{file}: {result['rows']} rows, {len(result['entries'])} decisions changed ({changed}), "
               f"{result['unchanged']} unchanged")
    click.echo(f"{_shown(decisions_path)}: " + ", ".join(f"{v} {k}" for k, v in after.items()))
    if result["entries"]:
        click.echo(f"Next: dsl plan {recipe} (synth.{label} re-runs from its journal, without teacher calls)")
