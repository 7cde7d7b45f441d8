"""dsl serve FILE [--host] [--port] [--no-auth]"""

from __future__ import annotations

import os
from typing import Optional

import click

from dsl.commands._applied import applied, applied_version, drift
from dsl.commands._common import workdir_option
from sdk.errors import DslError


@click.command("serve")
@click.argument("file", type=click.Path(dir_okay=False))
@workdir_option
@click.option("--host", help="Bind address (default: the serve block's, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: the serve block's).")
@click.option("--no-auth", is_flag=True, help="Serve without an API key even though the serve block names one "
              "whose variable is unset.")
def command(file: str, workdir: Optional[str], host: Optional[str], port: Optional[int], no_auth: bool) -> None:
    """Start the OpenAI-compatible gateway for an applied recipe."""
    from sdk.backends.serve.serve import load_config
    from sdk.promotion import withheld as withheld_by_state
    from sdk.serving import sglang
    from sdk.serving.gateway import Gateway, serve
    from sdk.systems import served_artifacts, serving_of

    # what is served is the workdir's applied serve step and what it recorded, never the recipe's current blocks:
    # the recipe only finds the workdir (and its drift is noted); broken or deleted, the workdir alone serves
    ws, base_dir = applied(file, workdir)
    step = next((s for s in sorted(ws.state.steps) if s.partition(".")[0] == "serve"), "serve.default")
    for step_id in [s for s in sorted(ws.state.steps) if serving_of(s) == "router"] + [step]:
        if step_id in ws.state.steps:
            ws.artifact(step_id)  # a damaged artifact is named by its file, before anything loads it
            drift(ws, step_id)
    serve_art = ws.artifact(step)
    config = load_config(serve_art)
    # promotion is state: a gate that failed since serve.json was written withholds its systems now
    held = {**withheld_by_state(ws.state.steps), **(config.get("withheld") or {})}
    config["withheld"] = held
    config["variants"] = {k: v for k, v in config["variants"].items() if k not in held}
    config["base_dir"] = str(base_dir)  # relative paths of what was applied (an embedder's folder) resolve here
    for step_id in sorted(config["variants"]):
        if step_id in ws.state.steps:
            ws.artifact(step_id)  # a damaged artifact is named by its file, before anything loads it
            drift(ws, step_id)
    # every served system (a model's weights, adapter and tokenizer included) is opened from the artifact the serve
    # step recorded as its input, its manifest checked against the sha256 recorded then: a tampered one is refused
    served = served_artifacts(serve_art, [*config["variants"], *(s for s in serve_art.manifest.get("inputs") or {}
                                                                 if serving_of(s) == "router" and config["router"])])
    key_env = config.get("api_key_env")
    if key_env and not os.environ.get(key_env):
        if not no_auth:
            raise DslError(f"{step} requires an API key, but the variable {key_env} is unset or empty: "
                           f"export {key_env}=<key> (or pass --no-auth to serve without one)")
        click.echo(f"warning: {key_env} is unset and --no-auth was given: the gateway answers without an API key",
                   err=True)
        config["api_key_env"] = None
    proc = None
    if config["engine"] == "sglang":
        sg = config["sglang"]
        if sg.get("command"):
            proc = sglang.start(sg["command"], sg["port"], log=lambda line: click.echo(line, err=True))
            url = f"http://127.0.0.1:{sg['port']}/v1"
            for variant, v in config["variants"].items():
                if v.get("sglang_model"):
                    config["variants"][variant] = {"type": "endpoint", "url": url, "model": v["sglang_model"],
                                                "timeout": config["timeout"]}
    try:
        try:
            gateway = Gateway(config, None, served)
        except DslError:
            raise
        except Exception as e:  # noqa: BLE001 - a model or index that does not load: say which, no traceback
            raise DslError(f"the gateway could not load what it serves: {type(e).__name__}: {e}") from None
        h, p = host or config["host"], port or config["port"]
        note = f" (withheld: {', '.join(sorted(gateway.withheld))})" if gateway.withheld else ""
        click.echo(f"{step}: {applied_version(ws.state.steps[step])}", err=True)  # which recipe version serves
        click.echo(f"serving {', '.join(gateway.models)} on http://{h}:{p}/v1{note}", err=True)
        serve(gateway, h, p)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:  # noqa: BLE001
                proc.kill()
