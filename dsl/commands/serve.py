"""dsl serve FILE [--host] [--port]"""

from __future__ import annotations

from typing import Optional

import click

from dsl.commands._common import only_label, open_ws, workdir_option
from sdk.errors import DslError


@click.command("serve")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--serve", "name", help="The serve block (serve.NAME); default: the only one.")
@workdir_option
@click.option("--host", help="Bind address (default: the serve block's, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: the serve block's).")
def command(file: str, name: Optional[str], workdir: Optional[str], host: Optional[str], port: Optional[int]) -> None:
    """Start the OpenAI-compatible gateway for an applied recipe."""
    from sdk.backends.serve import load_config
    from sdk.serving import sglang
    from sdk.serving.gateway import Gateway, serve

    ws = open_ws(file, workdir)
    label = only_label(ws, "serve", name, "--serve")
    config = load_config(ws.artifact(f"serve.{label}"))
    proc = None
    if config["engine"] == "sglang":
        sg = config["sglang"]
        if sg.get("command"):
            proc = sglang.start(sg["command"], sg["port"], log=lambda line: click.echo(line, err=True))
            url = f"http://127.0.0.1:{sg['port']}/v1"
            for name, v in config["variants"].items():
                if v.get("sglang_model"):
                    config["variants"][name] = {"type": "endpoint", "url": url, "model": v["sglang_model"],
                                                "timeout": config["timeout"]}
    try:
        try:
            gateway = Gateway(config, ws.spec, ws.artifacts())
        except DslError:
            raise
        except Exception as e:  # noqa: BLE001 - a model or index that does not load: say which, no traceback
            raise DslError(f"the gateway could not load what it serves: {type(e).__name__}: {e}") from None
        h, p = host or config["host"], port or config["port"]
        click.echo(f"serving {', '.join(gateway.models)} on http://{h}:{p}/v1", err=True)
        serve(gateway, h, p)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:  # noqa: BLE001
                proc.kill()
