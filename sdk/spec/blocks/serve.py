"""``serve { engine = local | sglang ... }``: the OpenAI-compatible gateway and its engine."""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdk.records.serve import ServeConfig
from sdk.spec.blocks.eval import gated_systems
from sdk.spec.kinds import Dep, content_facets, declare, get_kind, kinds_that_evaluate
from sdk.spec.objects import SGLangOptions, host_name
from sdk.spec.values import Block, PositiveInt, Secret, off_default, refuse_unread


def _setting(name: str) -> Any:
    """A gateway setting: its default, bounds and meaning are stated once, in
    :class:`sdk.records.serve.ServeConfig`."""
    return copy.deepcopy(ServeConfig.model_fields[name])


def _implicit(spec: Any, label: str, block: Any) -> list[Dep]:
    """What the gateway serves: the router, every model and system step, and the verdict of every gate (a system
    whose gate failed is withheld)."""
    deps: list[Dep] = [(f"route.{r}", None) for r in spec.route]
    for kind, lbl, _ in spec.blocks():
        if kind != "serve" and get_kind(kind).is_system:
            deps.append((f"{kind}.{lbl}", None))
    deps += [(f"eval.{e}", ("verdict",)) for e, ev in spec.eval.items() if gated_systems(ev)]
    # a plugin's kind declared to evaluate systems, with a gate: what it produced (its verdict among it)
    deps += [(f"{k}.{lbl}", None) for k in kinds_that_evaluate() if k != "eval"
             for lbl, blk in (getattr(spec, k, None) or {}).items() if getattr(blk, "gate", None) is not None]
    return deps


@declare("serve", labelled=False, backend=("gateway", "sdk.backends.serve.serve:ServeBackend",
                                            "pip install 'domain-dsl[serve]'"),
         outputs=("config",), implicit=_implicit, facets=content_facets)
class ServeBlock(Block):
    """The OpenAI-compatible gateway and its engine."""

    engine: Literal["local", "sglang"] = Field(default="local", description="local (transformers, CPU) or sglang (GPU)")
    host: str = Field(default="127.0.0.1", description="Bind address")
    port: int = Field(default=8000, ge=1, le=65535, description="Gateway port")
    api_key: Optional[Secret] = Field(default=None, description='Bearer key clients must send, as env("NAME")')
    sglang: SGLangOptions = Field(default_factory=SGLangOptions, description="SGLang launch options")
    engine_port: int = Field(default=30000, ge=1, le=65535, description="Port of the SGLang server behind the gateway")
    max_batch_size: PositiveInt = _setting("max_batch_size")
    max_tokens: PositiveInt = _setting("max_tokens")
    max_request_bytes: PositiveInt = _setting("max_request_bytes")
    timeout: float = _setting("timeout")
    header_timeout: float = _setting("header_timeout")
    body_timeout: float = _setting("body_timeout")
    backend: Optional[str] = Field(default=None, description="Backend name (default: gateway)")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return host_name(v)

    @model_validator(mode="after")
    def _options_of_the_engine(self) -> "ServeBlock":
        """SGLang's options with the local engine are read by nothing: a mistake, not a setting kept for later."""
        if self.engine == "local":
            refuse_unread(off_default(self, ("sglang", "engine_port")), "{names} {verb} to engine = sglang, and this "
                          "gateway runs the local engine: drop {names}, or write engine = sglang")
        elif self.port == self.engine_port:
            raise PydanticCustomError("incompatible", "port and engine_port are both {port}: the gateway and the "
                                      "SGLang server behind it cannot bind one port; change one", {"port": self.port})
        return self


