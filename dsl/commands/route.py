"""dsl route FILE "query" [--json]"""

from __future__ import annotations

import json
from typing import Optional

import click

from dsl.commands._common import json_option, only_label, open_ws, say_drift, workdir_option
from dsl.redact import shown


@click.command("route")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("query")
@workdir_option
@json_option
def command(file: str, query: str, workdir: Optional[str], as_json: bool) -> None:
    """Route a query: prints the target and its probability."""
    from sdk.spec.kinds import kinds_served_as
    from sdk.systems import open_system

    ws = open_ws(file, workdir)
    kind = kinds_served_as("router")[0]  # the kind that declares itself the router (route)
    label = only_label(ws, kind, None, "")  # route takes no label: one per domain
    art = ws.artifact(f"{kind}.{label}")
    changed = say_drift(ws, f"{kind}.{label}")
    decision = open_system(art).route(query)  # the router the route step applied, from its artifact
    if as_json:
        click.echo(json.dumps({**decision, "changed_since_applied": changed}, indent=2))
        return
    click.echo(shown(f"{decision['target']} -> {decision['system']}  (p = {decision['probability']:.3f})"))
