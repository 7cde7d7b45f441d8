"""dsl status FILE [--workdir W] [--json]: each step's state, the promotion of each system (and the eval that
decided it), whether the recipe changed since it was applied, its artifact, metrics and lineage."""

from __future__ import annotations

import json
from typing import Optional

import click

from dsl.commands._common import json_option, open_ws, out_console, workdir_option


@click.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@workdir_option
@json_option
def command(file: str, workdir: Optional[str], as_json: bool) -> None:
    """Show each step: its state, promotion, drift, artifact, metrics and lineage back to source files."""
    from sdk.planner import build_graph
    from sdk.promotion import promotion
    from sdk.systems import drift

    ws = open_ws(file, workdir)
    recipe, wd, state = ws.recipe, ws.workdir, ws.state
    promoted = promotion(state.steps)
    rows = []
    for step_id in build_graph(recipe.spec).order():
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

    console = out_console()
    console.print(f"[bold]{recipe.spec.name}[/]  workdir {wd}  (state serial {state.serial})")
    for r in rows:
        color = {"done": "green", "failed": "red", "gate_failed": "red"}.get(r["status"], "dim")
        tree = Tree(f"[{color}]{r['status']:<12}[/] [bold]{r['id']}[/]  {r['summary']}")
        if r["artifact"]:
            tree.add(f"artifact: {r['artifact']}")
        if r["promotion"]:
            p = r["promotion"]
            tree.add(f"[{'green' if p['promoted'] else 'red'}]{'promoted' if p['promoted'] else 'withheld'}[/]: "
                     f"{p['reason']}")
        if r["drift"]:
            tree.add(f"[yellow]{r['drift']}[/]")
        if r["error"]:
            tree.add(f"[red]error: {r['error']}[/]")
        lineage = r["lineage"]
        if lineage.get("steps") or lineage.get("files"):
            node = tree.add("lineage")
            for s in lineage.get("steps", []):
                node.add(f"step {s}")
            for f, h in lineage.get("files", {}).items():
                node.add(f"file {f}  sha256:{h[:12]}")
        console.print(tree)
