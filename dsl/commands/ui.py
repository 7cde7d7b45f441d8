"""dsl ui FILE [--host 127.0.0.1] [--port 8765] [--workdir W]"""

from __future__ import annotations

from typing import Optional

import click

from dsl.commands._common import workdir_option


@click.command("ui")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address; any but loopback needs DSL_UI_TOKEN set.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port.")
@workdir_option
def command(file: str, host: str, port: int, workdir: Optional[str]) -> None:
    """Open the recipe's pages in a browser: plan, runs (live), reports and a playground."""
    from dsl.parser import load_recipe
    from sdk.ui.server import serve

    load_recipe(file)  # a recipe error is reported located, like every command
    serve(file, host, port, workdir, say=lambda line: click.echo(line, err=True))
