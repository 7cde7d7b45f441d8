"""What `dsl apply` prints at the end: each step's outcome, each eval's headline (every system's score with its
confidence interval and p-value against the first, and the gate's verdict), the reports and the next commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from dsl.commands._common import out_console

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
    for col in ("step", "status", "time", "summary"):
        table.add_column(col)
    colors = {"ran": "green", "up_to_date": "dim", "failed": "red", "gate_failed": "red", "skipped": "yellow"}
    for o in result.outcomes:
        table.add_row(o.id, f"[{colors.get(o.status, 'white')}]{o.status}[/]",
                      f"{o.seconds:.1f}s" if o.seconds else "", (o.summary or o.error)[:90])
    console = out_console()
    console.print(table)
    c = {s: sum(1 for o in result.outcomes if o.status == s)
         for s in ("ran", "up_to_date", "skipped", "failed", "gate_failed")}
    gates = f", {c['gate_failed']} gate failed" if c["gate_failed"] else ""
    console.print(f"Apply complete: {c['ran']} ran, {c['up_to_date']} up to date, {c['skipped']} skipped, "
                  f"{c['failed']} failed{gates}. Workdir: {wd}")
    from sdk.state import StateStore

    state = StateStore(wd).load()
    for step_id in sorted(state.steps):
        folder = state.artifact_path(step_id) if step_id.startswith("eval.") else None
        if folder is not None and (folder / "summary.json").is_file():
            print_headline(console, step_id, json.loads((folder / "summary.json").read_text(encoding="utf-8")))
            console.print(f"Report ({step_id}): {folder / 'report.html'}")
    if not result.ok:
        return
    spec = recipe.spec
    path = f"{recipe.path} --workdir {workdir}" if workdir else str(recipe.path)
    hints = []
    if spec.serve:
        hints.append(f"dsl serve {path}            # OpenAI-compatible gateway, model=\"auto\" routes each query")
    if spec.rag:
        hints.append(f"dsl ask {path} \"a question\"  # answer with cited sources")
    if spec.route:
        hints.append(f"dsl route {path} \"a query\"   # which target a query goes to")
    if spec.eval:
        hints.append(f"dsl report {path}           # the evaluation table")
    if hints:
        console.print("Next:")
        for h in hints:
            console.print(f"  {h}")
