"""The gateway's variants and how to reach them (the HTTP side is :mod:`sdk.serving.app`). ``model="auto"``
routes each request through the router; a variant's name (``finetune.sip``, ``rag.docs``, ``general``)
addresses it directly. A fallback to the general target is marked. Systems the serve step withheld (``"withheld":
{name: reason}`` in serve.json, e.g. a failed promotion gate) are never served: a request naming one gets 404 with
the reason, and ``auto`` falls back to the general target instead of routing to one."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from sdk.records.serve import serve_config
from sdk.serving.metrics import Metrics
from sdk.serving.protocol import ClientError, ClientGone, UpstreamError, Withheld  # noqa: F401 - re-exported
from sdk.serving.upstream import call_endpoint
from sdk.systems import serving_of

log = logging.getLogger("dsl.gateway")


class Gateway:
    """The variants behind the gateway and how to reach them."""

    def __init__(self, config: dict[str, Any], spec: Any = None, artifacts: Optional[dict[str, Any]] = None,
                 preload: bool = True) -> None:
        self.config = serve_config(config)  # every setting present: read as config["timeout"], defaults stated once
        self.spec = spec
        self.artifacts = artifacts or {}
        self.withheld: dict[str, str] = {str(k): str(v) for k, v in (config.get("withheld") or {}).items()}
        self.engines: dict[str, Any] = {}
        self.rags: dict[str, Any] = {}
        self.router: Any = None
        self.metrics = Metrics(self.engines)
        self.lock = threading.Lock()
        if config.get("router"):
            from sdk.backends.routing.route import Router

            # the route step's artifact as the serve step recorded it (checked), else the folder serve.json names
            routers = [a for sid, a in sorted(self.artifacts.items()) if serving_of(sid) == "router"]
            self.router = Router.load(Path(routers[0].path if routers else config["router"]))
        if preload:
            for name, v in config["variants"].items():
                if v["type"] in ("model", "rag", "system") and name not in self.withheld:
                    self._ready(name)

    @property
    def general(self) -> Optional[str]:
        """The variant answering the general target: ``general`` (an endpoint) or a model / rag step."""
        general = self.config.get("general")
        name = "general" if isinstance(general, dict) else general
        return None if name in self.withheld else name

    @property
    def models(self) -> list[str]:
        names = (set(self.config["variants"]) | ({"general"} if self.general else set())) - set(self.withheld)
        auto = (self.router is not None or self.config.get("domain_target")) and "auto" not in self.withheld
        return (["auto"] if auto else []) + sorted(names)

    # ------------------------------------------------------------------------------------------ variants
    def model_handle(self, name: str) -> Any:
        """The weights, adapter and tokenizer of model variant ``name``, resolved from its applied artifact's
        manifest as every opener resolves them (``dsl serve`` passes the artifacts the serve step recorded, each
        checked: :func:`sdk.systems.served_artifacts`); a gateway given no artifact for it (one built from a bare
        configuration) runs the paths the configuration names."""
        from sdk.backends.models import ModelHandle, handle

        art = self.artifacts.get(name)
        if art is not None:
            return handle(art)
        v = self.config["variants"][name]
        return ModelHandle(model=v["model"], adapter=v.get("adapter"), tokenizer=v.get("tokenizer"))

    def _engine(self, name: str) -> Any:
        with self.lock:
            if name not in self.engines:
                from sdk.serving.engine import LocalEngine

                self.engines[name] = LocalEngine(self.model_handle(name), self.config["max_batch_size"], name)
            return self.engines[name]

    def _rag(self, name: str) -> Any:
        """A rag or plugin system, opened once by its kind's opener from its applied artifact (a rag system without
        its generator: the gateway calls the generator itself). Relative paths resolve against ``base_dir``."""
        with self.lock:
            if name not in self.rags:
                from sdk.systems import open_system

                base_dir = self.config.get("base_dir") or getattr(self.spec, "base_dir", None)
                self.rags[name] = open_system(self.artifacts[name], with_generator=False,
                                              base_dir=Path(base_dir) if base_dir else None)
        return self.rags[name]

    def _ready(self, name: str) -> None:
        v = self.config["variants"][name]
        if v["type"] == "model":
            self._engine(name)
        elif v["type"] == "system":
            self._rag(name)
        elif v["type"] == "rag":
            self._rag(name)
            name_of_gen = v.get("generator") if isinstance(v.get("generator"), str) else ""
            gen = self.config["variants"].get(name_of_gen, {})
            if gen.get("type") == "model":
                self._engine(v["generator"])

    def _generate(self, name: str, messages: list[dict[str, str]], max_tokens: int,
                  cancel: Optional[threading.Event]) -> dict[str, Any]:
        from sdk.serving.engine import Cancelled

        try:
            text, p, c = self._engine(name).generate(messages, max_tokens, timeout=self.config["timeout"],
                                                     cancel=cancel)
        except Cancelled:
            raise ClientGone() from None
        except TimeoutError:
            raise UpstreamError("the local engine timed out") from None
        return {"text": text, "prompt_tokens": p, "completion_tokens": c}

    def stream(self, name: str, messages: list[dict[str, str]], max_tokens: int,
               cancel: Optional[threading.Event] = None) -> Iterator[str]:
        """A local model's answer as text pieces, as its engine makes the tokens. Raises UpstreamError (also from
        the iterator), ClientGone when cancelled."""
        from sdk.serving.engine import Cancelled

        started = time.time()
        try:
            yield from self._engine(name).stream(messages, max_tokens, self.config["timeout"], cancel)
        except Cancelled:
            raise ClientGone() from None
        except TimeoutError:
            self.metrics.observe(name, "error", time.time() - started)
            raise UpstreamError(f"{name} failed: the local engine timed out") from None
        except Exception as e:  # noqa: BLE001 - named in the log, not to the client
            self.metrics.observe(name, "error", time.time() - started)
            log.warning("%s failed: %s: %s", name, type(e).__name__, e)
            raise UpstreamError(f"{name} failed: internal error") from None
        self.metrics.observe(name, "ok", time.time() - started)

    def complete(self, name: str, messages: list[dict[str, str]], max_tokens: int,
                 cancel: Optional[threading.Event] = None) -> dict[str, Any]:
        """Answer with one variant: {"text", "prompt_tokens", "completion_tokens", "sources"?}."""
        if name not in self.config["variants"]:
            raise KeyError(name)
        v = self.config["variants"][name]
        timeout = self.config["timeout"]
        if v["type"] == "model":
            return self._generate(name, messages, max_tokens, cancel)
        if v["type"] == "endpoint":
            return call_endpoint(v, messages, max_tokens, timeout)
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if not question.strip():
            raise ClientError(f"{name} answers a question: send at least one user message with text", "messages")
        if v["type"] == "system":  # a plugin's system: its own answer, and its sources when it gives them
            said = self._rag(name).answer(question, max_new_tokens=max_tokens)
            return {"text": str(said.get("answer") or ""), "prompt_tokens": 0, "completion_tokens": 0,
                    **({"sources": said["sources"]} if said.get("sources") else {})}
        rag = self._rag(name)
        docs = rag.retrieve(question)
        prompt = rag.render_prompt(question, docs)
        gen = v.get("generator")
        if gen is None:
            answer = {"text": "\n".join(f"[{i + 1}] {d['content'][:200]}" for i, d in enumerate(docs)),
                      "prompt_tokens": 0, "completion_tokens": 0}
        elif isinstance(gen, dict) or self.config["variants"].get(gen, {}).get("type") == "endpoint":
            target = gen if isinstance(gen, dict) else self.config["variants"][gen]
            answer = call_endpoint(target, [{"role": "user", "content": prompt}], max_tokens, timeout)
        else:
            answer = self._generate(gen, [{"role": "user", "content": prompt}], max_tokens, cancel)
        cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer["text"])}
        answer["sources"] = [{"index": i + 1, "id": d["id"], "source": d["meta"].get("source"),
                              "page": d["meta"].get("page"), "score": d["score"], "content": d["content"],
                              "cited": i + 1 in cited}
                             for i, d in enumerate(docs)]
        return answer

    def resolve(self, requested: str, messages: list[dict[str, str]]) -> tuple[str, Optional[dict[str, Any]]]:
        """(variant name, routing decision) for a request's model field."""
        if requested in self.withheld:
            raise Withheld(requested, self.withheld[requested])
        if requested == "general":
            general = self.config.get("general")
            name = "general" if isinstance(general, dict) else general
            if name in self.withheld:
                raise Withheld(str(name), self.withheld[str(name)])
            if self.general:
                return self.general, None
        if requested != "auto":
            return requested, None
        if self.router is None:
            return str(self.config.get("domain_target")), None
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        decision = self.router.route(question)
        system = decision.get("system")
        if decision["target"] == "general":
            system = self.general
        return str(system), decision

    def answer(self, requested: str, messages: list[dict[str, str]], max_tokens: int,
               cancel: Optional[threading.Event] = None) -> dict[str, Any]:
        """The answer of the requested (or routed) target; with ``auto``, the general target's answer, marked as
        a fallback, when the domain target fails. Raises UpstreamError (503), ClientError (400), Withheld and
        KeyError (404) and ClientGone (the client left)."""
        name, decision = self.resolve(requested, messages)
        if name in (None, "None"):
            raise UpstreamError("the router sent this query to the general target, and none is configured")
        started = time.time()
        try:
            if name in self.withheld:
                raise UpstreamError(f"{name} is withheld from serving")
            out = self.complete(name, messages, max_tokens, cancel)
            out.update(target=name, fallback=False, routing=decision)
            self.metrics.observe(name, "ok", time.time() - started, out.get("completion_tokens", 0))
            return out
        except (ClientError, ClientGone):
            raise
        except Exception as e:  # noqa: BLE001 - the domain target failed: fall back when we can
            if isinstance(e, KeyError) and requested != "auto":
                raise
            self.metrics.observe(name, "error", time.time() - started)
            reason = str(e) if isinstance(e, UpstreamError) else "not served" if isinstance(e, KeyError) else "internal error"
            if not isinstance(e, UpstreamError):
                log.warning("%s failed: %s: %s", name, type(e).__name__, e)
            fallback = self.general
            if requested != "auto" or not fallback or fallback == name:
                raise UpstreamError(f"{name} failed: {reason}") from None
            try:
                out = self.complete(fallback, messages, max_tokens, cancel)
            except (ClientError, ClientGone):
                raise
            except Exception as e2:  # noqa: BLE001 - the general target failed too: a clean 503
                if not isinstance(e2, UpstreamError):
                    log.warning("%s failed: %s: %s", fallback, type(e2).__name__, e2)
                raise UpstreamError(f"{name} failed: {reason}; the general target failed too") from None
            self.metrics.fallbacks.inc()
            out.update(target=fallback, fallback=True, routing=decision, fallback_reason=f"{name}: {reason}")
            return out


def __getattr__(name: str) -> Any:
    """``create_app`` and ``serve`` live in :mod:`sdk.serving.app`; importable from here as before."""
    if name in ("create_app", "serve"):
        from sdk.serving import app

        return getattr(app, name)
    raise AttributeError(name)
