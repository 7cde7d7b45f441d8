"""dsl status FILE [STEP] [--lineage] [--workdir W] [--json]: each step's state, the promotion of each system (and
the eval that decided it), whether the recipe changed since it was applied; with STEP or --lineage, its artifact and
lineage back to source files (--json: everything)."""

from __future__ import annotations

import json
from typing import Optional

import click

from dsl.commands._common import json_option, open_ws, out_console, workdir_option


@click.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("step", required=False)
@click.option("--lineage", is_flag=True, help="Show every step's artifact and lineage back to source files.")
@workdir_option
@json_option
def command(file: str, step: Optional[str], lineage: bool, workdir: Optional[str], as_json: bool) -> None:
    """Show each step: its state, promotion and drift, one line each; STEP (or --lineage, for all) adds the
    artifact and the lineage back to source files."""
    from sdk.errors import DslError
    from sdk.planner import build_graph
    from sdk.promotion import promotion
    from sdk.systems import drift

    ws = open_ws(file, workdir)
    recipe, wd, state = ws.recipe, ws.workdir, ws.state
    promoted = promotion(state.steps)
    order = build_graph(recipe.spec).order()
    if step is not None and step not in order:
        raise DslError(f"no step {step!r} in {recipe.path} (steps: {', '.join(order)})")
    rows = []
    for step_id in order if step is None else [step]:
        entry = state.steps.get(step_id, {})
        rows.append({"id": step_id, "status": entry.get("status", "not applied"),
                     "fingerprint": entry.get("fingerprint"), "artifact": entry.get("artifact"),
                     "summary": entry.get("summary", ""), "error": entry.get("error"),
                     "lineage": entry.get("lineage", {}), "metrics": entry.get("metrics", {}),
                     "promotion": promoted.get(step_id), "drift": drift(recipe.spec, state, step_id)})
    if as_json:
        click.echo(json.dumps({"domain": recipe.spec.name, "workdir": str(wd), "serial": state.serial,
                               "lineage": state.lineage, "steps": rows}, indent=2, default=str))
        return
    from rich.tree import Tree

    from dsl.redact import plain as escape  # state and lineage are workdir data: no markup, no terminal escapes
    from sdk.records.state import Status

    console = out_console()
    console.print(f"[bold]{escape(recipe.spec.name)}[/]  workdir {escape(str(wd))}  (state serial {state.serial})")
    full = lineage or step is not None
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        color = {Status.DONE.value: "green", Status.FAILED.value: "red",
                 Status.GATE_FAILED.value: "red"}.get(r["status"], "dim")
        tree = Tree(f"[{color}]{r['status']:<12}[/] [bold]{escape(r['id']):<{width}}[/]  {escape(r['summary'])}",
                    guide_style="dim")
        if full and r["artifact"]:
            tree.add(f"artifact: {escape(r['artifact'])}")
        if r["promotion"]:
            p = r["promotion"]
            tree.add(f"[{'green' if p['promoted'] else 'red'}]{'promoted' if p['promoted'] else 'withheld'}[/]: "
                     f"{escape(p['reason'])}")
        if r["drift"]:
            tree.add(f"[yellow]{escape(r['drift'])}[/]")
        if r["error"]:
            tree.add(f"[red]error: {escape(r['error'])}[/]")
        trace = r["lineage"]
        if full and (trace.get("steps") or trace.get("files")):
            node = tree.add("lineage")
            for s in trace.get("steps", []):
                node.add(f"step {s}")
            for f, h in trace.get("files", {}).items():
                node.add(f"file {escape(f)}  sha256:{h[:12]}")
        console.print(tree)
    if not full:
        console.print(f"[dim]artifacts and lineage: dsl status {escape(str(recipe.path))} STEP, or --lineage for "
                      "every step[/]")
