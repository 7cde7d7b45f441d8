"""dsl doctor FILE [--backend B] [--json]: run every step's environment checks (the ones ``dsl plan`` runs for
the steps that will run), whatever the state: required packages, cached hub models when offline, local model
folders, CUDA, a reachable pgvector server, set env() variables. Exit 1 when one fails."""

from __future__ import annotations

import json
from typing import Any, Optional

import click

from dsl.commands._common import json_option, out_console


@click.command("doctor")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", help="Check as if every step ran with this backend.")
@json_option
def command(file: str, backend: Optional[str], as_json: bool) -> None:
    """Check the machine for every step of a recipe; exit 1 when a check fails."""
    from dataclasses import replace

    from dsl.parser import load_recipe
    from sdk.backends.base import CheckContext, Registry, backend_name
    from sdk.planner import build_graph

    recipe = load_recipe(file)
    spec = recipe.spec
    registry = Registry()
    rows: list[dict[str, Any]] = []
    failed = 0
    for step_id in build_graph(spec).order():
        kind, _, label = step_id.partition(".")
        block = getattr(spec, kind)[label]
        name = backend_name(kind, block, backend)
        ctx = CheckContext(spec, kind, label, block)
        problems = registry.get(name).environment(ctx)
        diags = recipe.diagnostics(problems)
        diags = [replace(d, severity=getattr(p, "severity", "error")) for p, d in zip(problems, diags)]
        failed += sum(d.severity == "error" for d in diags)
        rows.append({"step": step_id, "backend": name, "checks": ctx.checked, "diagnostics": diags})
    if as_json:
        out = [{**r, "diagnostics": [_json(d) for d in r["diagnostics"]]} for r in rows]
        click.echo(json.dumps({"domain": spec.name, "ok": not failed, "steps": out}, indent=2))
    else:
        _print(rows, recipe)
        click.echo(f"{failed} check(s) failed." if failed else "All checks passed.")
    if failed:
        raise SystemExit(1)


def _json(d: Any) -> dict[str, Any]:
    span = d.span
    return {"path": span.path if span else None, "line": span.line if span else None,
            "col": span.col if span else None, "message": d.message, "hint": d.hint, "severity": d.severity}


def _print(rows: list[dict[str, Any]], recipe: Any) -> None:
    from rich.markup import escape

    console = out_console()
    for r in rows:
        console.print(f"[bold]{escape(r['step'])}[/] ({escape(r['backend'])})")
        if not r["checks"] and not r["diagnostics"]:
            console.print("  [dim]nothing to check[/]")
        for c in r["checks"]:
            console.print(f"  {'[green]ok[/]  ' if c['ok'] else '[red]FAIL[/]'} {escape(c['check'])}")
    for r in rows:
        for d in r["diagnostics"]:
            click.echo(d.format(recipe.sources.get(d.span.path) if d.span else None), err=True)
