"""dsl prefs check FILE [--fields k=v ...] [--json]  /  dsl prefs check --recipe R [--step align.X]

What a preference file holds before an ``align`` step spends compute on it: rows, shape (paired or unpaired, text
or chat), identical pairs, repeated prompts, the length bias of chosen answers, and for unpaired (KTO) rows the
label balance. The file is read as ``align`` reads it (sdk.backends.data.preferences), so a bad row is the same located
``FILE:LINE`` error, exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

KEYS = ("prompt", "chosen", "rejected", "completion", "label")


def _mapping(fields: tuple[str, ...]) -> dict[str, str]:
    from sdk.errors import DslError

    mapping: dict[str, str] = {}
    for f in fields:
        for part in f.split(","):
            key, sep, col = (x.strip() for x in part.partition("="))
            if not sep or not key or not col:
                raise DslError(f"--fields expects KEY=COLUMN, got {part!r}")
            if key not in KEYS:
                raise DslError(f"--fields: {key!r} is not a preference field (keys: {', '.join(KEYS)})")
            mapping[key] = col
    return mapping


def _shown(path: Path) -> str:
    """The path as messages name it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _guess_method(path: Path, shown: str, mapping: dict[str, str]) -> str:
    """kto when the first row looks unpaired (a completion or label column and no chosen one), else dpo."""
    from sdk.jsonl import read_jsonl

    for _, row in read_jsonl(path, shown, objects=False):
        if isinstance(row, dict) and mapping.get("chosen", "chosen") not in row and (
                mapping.get("completion", "completion") in row or mapping.get("label", "label") in row):
            return "kto"
        break
    return "dpo"


def _target(file: str | None, fields: tuple[str, ...], recipe: str | None,
            step: str | None) -> tuple[Path, str, str, dict[str, str], Any]:
    """(path, name shown, method, field mapping, align block or None) from the options."""
    from sdk.errors import DslError

    if recipe:
        from dsl.parser import load_recipe

        spec = load_recipe(recipe).spec
        labels = list(spec.align)
        label = (step or "").removeprefix("align.") or (labels[0] if len(labels) == 1 else "")
        if label not in spec.align:
            raise DslError(f"{recipe}: choose an align step with --step align.NAME "
                           f"(have: {', '.join('align.' + n for n in labels) or 'none'})")
        if fields:
            raise DslError("--fields comes from the recipe's align step when --recipe is given")
        block = spec.align[label]
        if not file and not isinstance(block.pairs, str):
            raise DslError(f"align.{label} reads {block.pairs}, made when the recipe is applied: check its rows.jsonl "
                           "with: dsl prefs FILE")
        path = Path(file) if file else spec.resolve_path(block.pairs)
        return path, file or _shown(path), block.method, dict(block.fields), block
    if step:
        raise DslError("--step names an align step of --recipe RECIPE")
    if not file:
        raise DslError("give the preference FILE, or --recipe RECIPE --step align.NAME")
    path = Path(file)
    if not path.is_file():
        raise DslError(f"{file}: no such file")
    mapping = _mapping(fields)
    method = _guess_method(path, file, mapping)
    allowed = ("prompt", "completion", "label") if method == "kto" else ("prompt", "chosen", "rejected")
    stray = sorted(set(mapping) - set(allowed))
    if stray:
        raise DslError(f"--fields {', '.join(stray)}: not fields of {'unpaired' if method == 'kto' else 'paired'} "
                       f"rows (they have {', '.join(allowed)})")
    return path, file, method, mapping, None


def _lines(shown: str, found: list[Any]) -> str:
    return ", ".join(f"{shown}:{x[0]} (as line {x[1]})" if isinstance(x, list) else f"{shown}:{x}" for x in found)


def report(summary: dict[str, Any], shown: str, paired: bool) -> tuple[list[str], list[str], list[str]]:
    """(figures, warnings, errors) as lines of text."""
    from sdk.backends.data.preferences import label_problem

    n = summary["pairs"] if paired else summary["examples"]
    lines = [f"{shown}: {n} rows, {'paired' if paired else 'unpaired'}, {summary['shape']}"]
    warnings: list[str] = []
    errors: list[str] = []
    if paired:
        lines.append(f"  identical pairs (chosen == rejected): {summary['identical_pairs']}"
                     + (f": {_lines(shown, summary['identical_lines'])}" if summary["identical_pairs"] else ""))
        if summary["identical_pairs"]:
            warnings.append(f"{summary['identical_pairs']} pairs have chosen == rejected: nothing to learn from them")
        share = summary["chosen_longer_share"]
        lines.append(f"  length: chosen is the longer answer in {share:.0%} of the pairs; mean "
                     f"{summary['mean_chosen_chars']} chars chosen, {summary['mean_rejected_chars']} rejected")
        if share >= 0.8 and n >= 10:
            warnings.append(f"the chosen answer is the longer one in {share:.0%} of the pairs: a preference method "
                            "may learn that longer is better (length bias)")
    else:
        lines.append(f"  labels: {summary['desirable']} desirable, {summary['undesirable']} undesirable "
                     f"({summary['desirable_share']:.0%} desirable)")
        lines.append(f"  contradicting labels (same prompt and answer): {summary['conflicting_labels']}"
                     + (f": {_lines(shown, summary['conflicting_lines'])}" if summary["conflicting_labels"] else ""))
        if summary["conflicting_labels"]:
            warnings.append(f"{summary['conflicting_labels']} rows repeat a prompt and answer with the other label")
        lines.append(f"  length: mean {summary['mean_desirable_chars']} chars desirable, "
                     f"{summary['mean_undesirable_chars']} undesirable")
        problem = label_problem(summary)
        if problem:
            errors.append(problem)
    lines.insert(2, f"  duplicate prompts (rows whose prompt an earlier row has): {summary['duplicate_prompts']}"
                    + (f": {_lines(shown, summary['duplicate_lines'])}" if summary["duplicate_prompts"] else ""))
    return lines, warnings, errors


@click.group("prefs")
def command() -> None:
    """Check a preference file (pairs for dpo, simpo and orpo, labelled answers for kto)."""


@command.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--fields", "--field", "fields", multiple=True, metavar="KEY=COLUMN",
              help="Map a column, e.g. --fields prompt=question,chosen=good (repeatable, or comma-separated). "
                   "Keys: prompt, chosen, rejected (pairs); prompt, completion, label (unpaired).")
@click.option("--recipe", "--spec", "recipe", type=click.Path(dir_okay=False), metavar="RECIPE",
              help="Take the file, method and field mapping from an align step of this recipe.")
@click.option("--step", metavar="align.NAME", help="The align step of --recipe (default: the only one).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def check(file: str | None, fields: tuple[str, ...], recipe: str | None, step: str | None, as_json: bool) -> None:
    """Rows, shape, identical pairs, duplicate prompts, length bias and (unpaired rows) label balance of a
    preference file. Exit 1 on a bad row (located FILE:LINE) or a file align would refuse."""
    from sdk.backends.data.preferences import kto_weights_hint, read_preferences, summary_of
    from sdk.errors import DataError

    path, shown, method, mapping, block = _target(file, fields, recipe, step)
    rows = read_preferences(path, shown, method, mapping)
    if not rows:
        raise DataError(shown, None, "no preference rows")
    summary = summary_of(rows, method)
    paired = method != "kto"
    lines, warnings, errors = report(summary, shown, paired)
    if block is not None and not paired and not errors:
        hint = kto_weights_hint(summary, block.desirable_weight or 1.0, block.undesirable_weight or 1.0)
        warnings += [hint] if hint else []
    if as_json:
        click.echo(json.dumps({"file": shown, "rows": len(rows), "shape": "paired" if paired else "unpaired",
                               "format": summary["shape"], "method": method if block is not None else None,
                               **{k: v for k, v in summary.items() if k != "shape"},
                               "warnings": warnings, "errors": errors}, indent=2))
    else:
        for line in lines:
            click.echo(line)
        for w in warnings:
            click.echo(f"{shown}: warning: {w}", err=True)
        for e in errors:
            click.echo(f"{shown}: error: {e}", err=True)
    if errors:
        raise SystemExit(1)
