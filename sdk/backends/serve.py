"""The ``serve`` step: resolves what the gateway serves into ``serve.json`` (it starts nothing; ``dsl serve``
does). Variants: every pretrain and finetune model, every rag system, a local base model, and the general target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.backends.base import Backend, StepContext, StepResult


def endpoint_config(ep: Any) -> dict[str, Any]:
    return {"type": "endpoint", "url": ep.url.rstrip("/"), "model": ep.model, "timeout": ep.timeout,
            "api_key_env": ep.api_key.env if ep.api_key else None}


class ServeBackend(Backend):
    name = "gateway"
    version = "1"
    kinds = ("serve",)

    def run(self, ctx: StepContext) -> StepResult:
        from sdk.backends.models import handle
        from sdk.serving import sglang
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
        if block.engine == "sglang":
            adapters = {k.split(".", 1)[1]: v["adapter"] for k, v in variants.items() if v.get("adapter")}
            bases = {v["model"] for v in variants.values() if v.get("adapter")}
            base = next(iter(bases), None) or next((v["model"] for v in variants.values() if v.get("type") == "model"), None)
            config["sglang"] = {"base": base, "adapters": adapters, "port": block.engine_port,
                                "command": sglang.launch_command(base or "", adapters, block.sglang.model_dump(),
                                                                 block.engine_port)}
        (ctx.out_dir / "serve.json").write_text(json.dumps(config, indent=2))
        names = ", ".join(["auto"] + sorted(variants))
        return StepResult(outputs={"config": "serve.json", "models": ["auto"] + sorted(variants)},
                          summary=f"{block.engine} gateway on {block.host}:{block.port} serving {names}")


def load_config(art: Any) -> dict[str, Any]:
    return json.loads((Path(art.path) / art.outputs.get("config", "serve.json")).read_text())
