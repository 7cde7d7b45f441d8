"""dsl verify FILE [--workdir W] [--json]: check every applied artifact's files against the sizes and sha256
hashes its manifest recorded (``dsl plan`` checks sizes only), and each manifest against the sha256 the state
recorded when it was written (an edited manifest, e.g. a generator endpoint's URL, is damaged)."""

from __future__ import annotations

import json
from typing import Optional

import click

from dsl.commands._common import json_option, open_ws, workdir_option


@click.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@workdir_option
@json_option
def command(file: str, workdir: Optional[str], as_json: bool) -> None:
    """Check applied artifacts against their recorded hashes; exit 1 when one is damaged."""
    from sdk.integrity import damaged
    from sdk.records.state import Status

    ws = open_ws(file, workdir)
    rows = []
    for step_id, entry in sorted(ws.state.steps.items()):
        if entry.get("status") not in Status.finished():
            continue
        problem = damaged(ws.state, step_id, entry, hashes=True)
        note = None if problem or entry.get("manifest_sha256") or not entry.get("artifact") else \
            "manifest not under integrity yet (applied by an older version): the next dsl apply records it"
        rows.append({"step": step_id, "ok": problem is None, "problem": problem, "note": note})
    bad = [r for r in rows if not r["ok"]]
    if as_json:
        click.echo(json.dumps({"workdir": str(ws.workdir), "steps": rows, "damaged": len(bad)}, indent=2))
    else:
        for r in rows:
            click.echo(f"  {'ok     ' if r['ok'] else 'DAMAGED'} {r['step']}" + (f"  ({r['problem']})" if r["problem"] else "")
                       + (f"  ({r['note']})" if r["note"] else ""))
        click.echo(f"{len(rows) - len(bad)} of {len(rows)} artifacts intact"
                   + (f"; re-run the damaged ones with dsl apply --replace {' --replace '.join(r['step'] for r in bad)}"
                      if bad else "."))
    if bad:
        raise SystemExit(1)
