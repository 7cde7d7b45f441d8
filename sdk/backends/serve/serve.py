"""The ``serve`` step: resolves what the gateway serves into ``serve.json`` (it starts nothing; ``dsl serve``
does). Variants: every pretrain and finetune model, every rag system, a local base model, and the general target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk import envchecks as E
from sdk.backends.base import Backend, StepContext, StepResult
from sdk.backends.models import handle
from sdk.backends.serve.engines import ENGINES
from sdk.errors import DslError
from sdk.promotion import verdicts, withheld
from sdk.records.serve import SERVE_JSON, SETTINGS, ServeConfig, load_serve, save_serve, serve_config
from sdk.records.state import Status
from sdk.spec import Endpoint, Ref
from sdk.state import inside
from sdk.systems import applied_block, serving_of, workdir_of


def endpoint_config(ep: Any) -> dict[str, Any]:
    return {"type": "endpoint", "url": ep.url.rstrip("/"), "model": ep.model, "timeout": ep.timeout,
            "api_key_env": ep.api_key.env if ep.api_key else None, "max_retries": ep.max_retries}


class ServeBackend(Backend):
    name = "gateway"
    version = "2"
    kinds = ("serve",)
    reads_secrets = False  # the gateway reads api keys when dsl serve starts it, not this step

    def environment(self, ctx: Any) -> list:
        problems = super().environment(ctx)
        if ctx.block.engine == "sglang":
            at = ctx.path + ("engine",)
            problems += E.package(ctx, "sglang", at, "engine = sglang", "pip install 'sglang[all]' (on a CUDA machine)")
            problems += E.cuda(ctx, at, "engine = sglang", "serve with engine = local on this machine")
        return problems

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        spec = ctx.spec
        artifacts = ctx.inputs
        # a system a failed gate names is not served (the eval inputs are the gates' verdicts)
        held = withheld({sid: {**art.manifest, "status": art.manifest.get("status", Status.DONE.value)}
                         for sid, art in artifacts.items()})
        variants: dict[str, Any] = {}
        for sid, art in sorted(artifacts.items()):
            if sid in held or serving_of(sid) != "model":
                continue
            if art.outputs.get("model_source") in ("scratch", "hub"):
                continue
            h = handle(art)
            variants[sid] = {"type": "model", "model": h.model, "adapter": h.adapter, "tokenizer": h.tokenizer}
        for sid, art in sorted(artifacts.items()):
            if serving_of(sid) not in ("rag", "system") or sid in held:
                continue
            if serving_of(sid) == "system":  # opened by its kind's opener from this artifact, asked in a thread
                variants[sid] = {"type": "system", "artifact": str(art.path)}
                continue
            gen = applied_block(art).generator
            variants[sid] = {"type": "rag", "label": sid.partition(".")[2],
                             "generator": endpoint_config(gen) if isinstance(gen, Endpoint) else (str(gen) if gen else None)}
        route_art = next((a for sid, a in sorted(artifacts.items()) if serving_of(sid) == "router"), None)
        route = applied_block(route_art) if route_art is not None else None
        router = str(route_art.path) if route_art is not None else None
        gated_out = _gated_out(artifacts)
        if gated_out:  # a router that failed a gate routes nothing: auto is withheld, like a failed system
            held["auto"], router = gated_out, None
        general: Any = None
        if route is not None:
            if isinstance(route.general, Endpoint):
                general = endpoint_config(route.general)
                variants["general"] = general
            elif isinstance(route.general, Ref):
                general = str(route.general)
            else:  # no general target: the domain system answers what the router does not send elsewhere
                general = str(route.domain)
        config: dict[str, Any] = {
            "domain": spec.name, "engine": block.engine, "host": block.host, "port": block.port,
            "api_key_env": block.api_key.env if block.api_key else None,
            **{name: getattr(block, name) for name in SETTINGS},
            "variants": variants, "router": router, "general": general, "withheld": held,
            "domain_target": str(route.domain) if route is not None else None,
        }
        planned, notes = ENGINES[block.engine]().plan(variants, hub_bases(spec, artifacts), block)
        if planned is not None:
            config[block.engine] = planned
        config = _relative(config, Path(ctx.workdir).resolve())
        save_serve(ServeConfig.model_validate(config), ctx.out_dir)
        names = ", ".join(["auto"] + sorted(variants))
        summary = f"{block.engine} gateway on {block.host}:{block.port} serving {names}"
        if held:
            summary += f"; withheld: {', '.join(f'{k} ({v})' for k, v in sorted(held.items()))}"
        return StepResult(outputs={"config": SERVE_JSON, "models": ["auto"] + sorted(variants)},
                          summary="; ".join([summary] + notes))


def _gated_out(artifacts: dict[str, Any]) -> str:
    """Why the route step among ``artifacts`` may not route (its own gate failed, or an eval gate naming it did),
    or "" when it may."""
    judged = verdicts({sid: {**a.manifest, "status": a.manifest.get("status", Status.DONE.value)}
                      for sid, a in artifacts.items()})
    for sid, art in sorted(artifacts.items()):
        if serving_of(sid) != "router":
            continue
        if art.manifest.get("status") == Status.GATE_FAILED.value:
            return f"{sid} failed its gate: {art.manifest.get('error') or 'see dsl status'}"
        failed = [e for e, ok, _ in judged.get(sid, []) if not ok]
        if failed:
            return f"gate of {failed[0]} failed"
    return ""


def hub_bases(spec: Any, artifacts: dict[str, Any]) -> dict[str, str]:
    """Model steps (a base_model) that name a hub model: SGLang can serve them even though the CPU engine does not
    load them. Models are found by their kind's declaration (``serving="model"``), not by its name."""
    return {sid: str(art.outputs["model"]) for sid, art in sorted(artifacts.items())
            if serving_of(sid) == "model" and art.outputs.get("model_source") == "hub"}


WORKDIR = "$WORKDIR/"


def _relative(value: Any, root: Path) -> Any:
    """Paths inside the workdir are written relative to it (``$WORKDIR/artifacts/...``): a workdir copied or moved
    elsewhere serves its own artifacts, never the original's."""
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/") and Path(value).is_relative_to(root):
        return WORKDIR + Path(value).relative_to(root).as_posix()
    return value


def _absolute(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _absolute(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, root) for v in value]
    if isinstance(value, str) and value.startswith(WORKDIR):
        target = inside(root, value[len(WORKDIR):])
        if target is None:
            raise DslError(f"serve.json names {value!r}, which is outside the workdir's artifacts")
        return str(target.resolve())
    return value


def load_config(art: Any) -> dict[str, Any]:
    """serve.json of a serve artifact, its workdir paths resolved where the workdir is now."""
    path = Path(art.path) / art.outputs.get("config", SERVE_JSON)
    config = serve_config(load_serve(path, art.step_id))  # every setting present, validated
    return _absolute(config, workdir_of(art).resolve())
