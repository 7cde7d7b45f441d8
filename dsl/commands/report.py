"""dsl report FILE [--eval NAME] [--json]"""

from __future__ import annotations

import json

import click

from dsl.commands._common import json_option, only_label, open_ws, out_console, workdir_option


@click.command("report")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--eval", "name", help="The eval block (eval.NAME); default: the only one.")
@workdir_option
@json_option
def command(file: str, name: str | None, workdir: str | None, as_json: bool) -> None:
    """Show the evaluation report of an applied recipe."""
    ws = open_ws(file, workdir)
    label = only_label(ws, "eval", name, "--eval")
    art = ws.artifact(f"eval.{label}")
    from sdk.records.eval import SUMMARY_JSON, load_eval

    if "summary" not in art.outputs:
        from sdk.errors import DslError

        raise DslError(f"eval.{label} has no report in {art.path} (it was applied by the "
                       f"{ws.state.steps.get(f'eval.{label}', {}).get('backend', '?')} backend); "
                       "run dsl apply with the real backends, or see dsl status")
    summary = load_eval(art.path / art.outputs.get("summary", SUMMARY_JSON), f"eval.{label}")
    if as_json:
        click.echo(json.dumps({**summary, "report": str(art.path / "report.md"),
                               "html": str(art.path / "report.html")}, indent=2))
        return
    from rich.table import Table

    from dsl.redact import plain, shown  # the summary is workdir data: no markup, no terminal escapes
    from sdk.report import contamination_text, table_rows

    head, body = table_rows(summary)
    table = Table(title=plain(f"eval.{label}: {summary['n_items']} items ({summary['task']})"), title_justify="left")
    for h in head:
        table.add_column(plain(h), overflow="fold")  # wrapped at spaces, a long word folded: never cut
    for row in body:
        table.add_row(*(plain(cell) for cell in row))
    console = out_console()
    console.print(table)
    gate = summary.get("gate")
    if gate:
        console.print(f"gate {plain(gate['expression'])}: {'[green]passed[/]' if gate['passed'] else '[red]FAILED[/]'} "
                      f"({plain(gate['detail'])})")
    overlap = contamination_text(summary, ws.spec)
    if overlap:
        console.print(f"contamination: {shown(overlap)}", markup=False)
    m = summary.get("misses")
    if m and m.get("wrong"):
        console.print(plain(f"{m['system']}: {m['wrong']} wrong answers, {m['retrieval']} retrieval misses, "
                            f"{m['generation']} generation misses"))
    console.print(f"report: {plain(art.path / 'report.html')}")
