"""What `dsl apply` prints at the end: each step's outcome, each eval's headline (every system's score with its
confidence interval and p-value against the first, and the gate's verdict), the reports and the next commands."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional

from dsl.commands._common import out_console
from sdk.spec.kinds import evaluates, kinds_served_as

HEADLINE = ("accuracy", "exact_match", "f1", "perplexity")


def print_headline(console: Any, step_id: str, summary: dict[str, Any]) -> None:
    """One line per system: the eval's headline metric, its interval, the p-value against the first system."""
    metrics = summary.get("metrics") or {}
    name = next((m for m in HEADLINE if any(m in cells for cells in metrics.values())), None)
    if name is None:
        return
    console.print(f"{step_id}: {name} on {summary.get('n_items')} items "
                  f"({summary.get('confidence', 0.95):.0%} CI; p against {next(iter(metrics), '')})")
    for sid, cells in metrics.items():
        cell = cells.get(name)
        if not isinstance(cell, dict):
            continue
        p = ((summary.get("comparisons") or {}).get(sid) or {}).get(name, {}).get("p_value")
        console.print(f"  {sid:<28} {cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
                      + (f"  p = {p:.3f}" if p is not None else ""))
    gate = summary.get("gate")
    if gate:
        verdict = "[green]passed[/]" if gate["passed"] else "[red]FAILED[/]"
        console.print(f"  gate {gate['expression']}: {verdict}")


def print_summary(result: Any, recipe: Any, wd: Path, workdir: Optional[str] = None) -> None:
    from rich.table import Table

    table = Table(title=f"{recipe.spec.name}: apply summary", title_justify="left")
    for col in ("step", "status", "time", "summary"):  # cells wrap at spaces; a word too long folds, never cut
        table.add_column(col, overflow="fold", no_wrap=col != "summary")
    colors = {"ran": "green", "up_to_date": "dim", "failed": "red", "gate_failed": "red", "skipped": "yellow"}
    for o in result.outcomes:
        table.add_row(o.id, f"[{colors.get(o.status, 'white')}]{o.status}[/]",
                      f"{o.seconds:.1f}s" if o.seconds else "",
                      textwrap.shorten(o.summary or o.error, 240, placeholder=" ..."))
    console = out_console()
    console.print(table)
    c = {s: sum(1 for o in result.outcomes if o.status == s)
         for s in ("ran", "up_to_date", "skipped", "failed", "gate_failed")}
    gates = f", {c['gate_failed']} gate failed" if c["gate_failed"] else ""
    console.print(f"Apply complete: {c['ran']} ran, {c['up_to_date']} up to date, {c['skipped']} skipped, "
                  f"{c['failed']} failed{gates}. Workdir: {wd}")
    from sdk.errors import DslError
    from sdk.records.eval import SUMMARY_JSON, load_eval
    from sdk.state import StateStore

    state = StateStore(wd).load()
    for step_id in sorted(state.steps):
        folder = state.artifact_path(step_id) if evaluates(step_id) else None  # declared, not named
        if folder is not None and (folder / SUMMARY_JSON).is_file():
            try:
                print_headline(console, step_id, load_eval(folder / SUMMARY_JSON, step_id))
            except DslError as e:  # a damaged summary is named, the apply's outcome still printed
                console.print(f"{step_id}: {e}", markup=False)
                continue
            console.print(f"Report ({step_id}): {folder / 'report.html'}")
    if not result.ok:
        return
    hints = next_commands(recipe.spec, state.steps, str(recipe.path), workdir)
    if hints:
        console.print("Next:")
        width = max(len(cmd) for cmd, _ in hints)
        for cmd, why in hints:
            console.print(f"  {cmd:<{width}}  # {why}", markup=False)


def next_commands(spec: Any, steps: dict[str, Any], path: str,
                  workdir: Optional[str] = None) -> list[tuple[str, str]]:
    """The commands to try after an apply, each runnable as printed (shell-quoted, a --system or --eval where
    the recipe has several blocks of that kind): (command, what it does)."""
    import shlex

    from sdk.promotion import promotion

    where = shlex.quote(path) + (f" --workdir {shlex.quote(workdir)}" if workdir else "")
    out = []
    if spec.serve:
        out.append((f"dsl serve {where}", 'OpenAI-compatible gateway, model="auto" routes each query'))
    # the rag systems: steps of every kind declared to be served as one (``serving="rag"``), not of a kind's name
    rags = [f"{kind}.{label}" for kind in kinds_served_as("rag") for label in getattr(spec, kind, None) or {}]
    if rags:
        choose = ""
        if len(rags) > 1:
            promoted = promotion(steps)
            routed = {str(getattr(r, "domain", "") or "") for r in spec.route.values()}

            def rank(sid: str) -> tuple[bool, bool, bool]:
                p = promoted.get(sid) or {}
                return (not p.get("promoted"), not p.get("decided_by"), sid not in routed)

            choose = f" --system {min(rags, key=rank)}"
        out.append((f'dsl ask {where}{choose} "a question"', "answer with cited sources"))
    if spec.route:
        out.append((f'dsl route {where} "a query"', "which target a query goes to"))
    if spec.eval:
        choose = f" --eval eval.{next(iter(spec.eval))}" if len(spec.eval) > 1 else ""
        out.append((f"dsl report {where}{choose}", "the evaluation table"))
    return out
