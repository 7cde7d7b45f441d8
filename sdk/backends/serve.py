"""The ``serve`` step: resolves what the gateway serves into ``serve.json`` (it starts nothing; ``dsl serve``
does). Variants: every pretrain and finetune model, every rag system, a local base model, and the general target."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sdk.backends.base import Backend, StepContext, StepResult


def endpoint_config(ep: Any) -> dict[str, Any]:
    return {"type": "endpoint", "url": ep.url.rstrip("/"), "model": ep.model, "timeout": ep.timeout,
            "api_key_env": ep.api_key.env if ep.api_key else None, "max_retries": ep.max_retries}


class ServeBackend(Backend):
    name = "gateway"
    version = "1"
    kinds = ("serve",)

    def run(self, ctx: StepContext) -> StepResult:
        from sdk.backends.models import handle
        from sdk.spec import Endpoint, Ref

        block: Any = ctx.block
        spec = ctx.spec
        artifacts = ctx.options.get("artifacts", ctx.inputs)
        variants: dict[str, Any] = {}
        for kind in ("base_model", "pretrain", "finetune"):
            for label in getattr(spec, kind):
                art = artifacts.get(f"{kind}.{label}")
                if art is None or art.outputs.get("model_source") in ("scratch", "hub"):
                    continue
                h = handle(art)
                variants[f"{kind}.{label}"] = {"type": "model", "model": h.model, "adapter": h.adapter,
                                               "tokenizer": h.tokenizer}
        for label, rag in spec.rag.items():
            gen = rag.generator
            variants[f"rag.{label}"] = {"type": "rag", "label": label,
                                        "generator": endpoint_config(gen) if isinstance(gen, Endpoint) else (str(gen) if gen else None)}
        route = next(iter(spec.route.values()), None)
        router = None
        general: Any = None
        if route is not None:
            art = artifacts.get(f"route.{next(iter(spec.route))}")
            router = str(art.path) if art else None
            if isinstance(route.general, Endpoint):
                general = endpoint_config(route.general)
                variants["general"] = general
            elif isinstance(route.general, Ref):
                general = str(route.general)
        config: dict[str, Any] = {
            "domain": spec.name, "engine": block.engine, "host": block.host, "port": block.port,
            "api_key_env": block.api_key.env if block.api_key else None, "max_batch_size": block.max_batch_size,
            "max_tokens": block.max_tokens, "max_request_bytes": block.max_request_bytes, "timeout": block.timeout,
            "variants": variants, "router": router, "general": general,
            "domain_target": str(route.domain) if route is not None else None,
        }
        notes: list[str] = []
        if block.engine == "sglang":
            config["sglang"], notes = sglang_plan(variants, hub_bases(spec, artifacts), block)
        (ctx.out_dir / "serve.json").write_text(json.dumps(config, indent=2))
        names = ", ".join(["auto"] + sorted(variants))
        summary = f"{block.engine} gateway on {block.host}:{block.port} serving {names}"
        return StepResult(outputs={"config": "serve.json", "models": ["auto"] + sorted(variants)},
                          summary="; ".join([summary] + notes))


def hub_bases(spec: Any, artifacts: dict[str, Any]) -> dict[str, str]:
    """base_model steps that name a hub model: SGLang can serve them even though the CPU engine does not load them."""
    out = {}
    for label in spec.base_model:
        art = artifacts.get(f"base_model.{label}")
        if art is not None and art.outputs.get("model_source") == "hub":
            out[f"base_model.{label}"] = str(art.outputs["model"])
    return out


def sglang_plan(variants: dict[str, Any], hubs: dict[str, str], block: Any) -> tuple[dict[str, Any], list[str]]:
    """One SGLang server: the base model most adapters apply to, with every adapter on it as ``--lora-paths
    NAME=PATH``. Each variant it serves gets ``sglang_model`` (``base`` or ``base:NAME``, SGLang's naming); the
    others stay on the local engine, and a note says so."""
    from sdk.serving import sglang

    models = {k: v for k, v in variants.items() if v.get("type") == "model"}
    bases = Counter(v["model"] for v in models.values() if v.get("adapter"))
    base = bases.most_common(1)[0][0] if bases else next(iter(hubs.values()), None) or \
        next((v["model"] for v in models.values()), None)
    notes: list[str] = []
    adapters: dict[str, str] = {}
    if base is None:
        return {"base": None, "adapters": {}, "port": block.engine_port, "command": None}, \
            ["sglang: no model to serve (only rag systems and endpoints)"]
    for name, v in models.items():
        if v["model"] != base:
            notes.append(f"sglang: {name} is not on {base}, so the local engine serves it")
            continue
        if v.get("adapter"):
            adapter = name.split(".", 1)[1]
            adapters[adapter] = v["adapter"]
            v["sglang_model"] = sglang.model_name(base, adapter)
        else:
            v["sglang_model"] = base
    for name, hub in hubs.items():
        if hub == base:
            variants[name] = {"type": "model", "model": hub, "adapter": None, "tokenizer": None, "sglang_model": base}
    command = sglang.launch_command(base, adapters, block.sglang.model_dump(), block.engine_port)
    return {"base": base, "adapters": adapters, "port": block.engine_port, "command": command}, notes


def load_config(art: Any) -> dict[str, Any]:
    return json.loads((Path(art.path) / art.outputs.get("config", "serve.json")).read_text())
