"""The OpenAI-compatible gateway (FastAPI): /v1/models, /v1/chat/completions (with stream=true as server-sent
events), /v1/completions, /health and /metrics. ``model="auto"`` routes each request through the router; a
variant's name (``finetune.sip``, ``rag.docs``, ``general``) addresses it directly. Every response says which
target served it (header ``X-DSL-Target`` and field ``dsl_target``); a fallback to the general target is marked
(``X-DSL-Fallback: true``, ``dsl_fallback``)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict[str, Any]], None] = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    stream: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    stream: bool = False


class UpstreamError(Exception):
    pass


class Metrics:
    """Prometheus counters kept by hand (no secrets, no request bodies)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.fallbacks = 0
        self.errors: dict[int, int] = {}
        self.latency_sum: dict[str, float] = {}
        self.latency_count: dict[str, int] = {}
        self.tokens = 0

    def observe(self, target: str, status: str, seconds: float, tokens: int = 0) -> None:
        with self.lock:
            self.requests[(target, status)] = self.requests.get((target, status), 0) + 1
            self.latency_sum[target] = self.latency_sum.get(target, 0.0) + seconds
            self.latency_count[target] = self.latency_count.get(target, 0) + 1
            self.tokens += tokens

    def error(self, code: int) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1

    def render(self) -> str:
        lines = ["# HELP dsl_requests_total Requests served, by target and outcome.", "# TYPE dsl_requests_total counter"]
        with self.lock:
            for (t, s), n in sorted(self.requests.items()):
                lines.append(f'dsl_requests_total{{target="{t}",status="{s}"}} {n}')
            lines += ["# HELP dsl_fallbacks_total Requests answered by the general target after the domain target failed.",
                      "# TYPE dsl_fallbacks_total counter", f"dsl_fallbacks_total {self.fallbacks}",
                      "# HELP dsl_errors_total Error responses by HTTP status.", "# TYPE dsl_errors_total counter"]
            lines += [f'dsl_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
            lines += ["# HELP dsl_request_seconds Time to answer, by target.", "# TYPE dsl_request_seconds summary"]
            for t in sorted(self.latency_sum):
                lines.append(f'dsl_request_seconds_sum{{target="{t}"}} {self.latency_sum[t]:.6f}')
                lines.append(f'dsl_request_seconds_count{{target="{t}"}} {self.latency_count[t]}')
            lines += ["# HELP dsl_completion_tokens_total Generated tokens.", "# TYPE dsl_completion_tokens_total counter",
                      f"dsl_completion_tokens_total {self.tokens}"]
        return "\n".join(lines) + "\n"


class Gateway:
    """The variants behind the gateway and how to reach them."""

    def __init__(self, config: dict[str, Any], spec: Any = None, artifacts: Optional[dict[str, Any]] = None,
                 preload: bool = True) -> None:
        self.config = config
        self.spec = spec
        self.artifacts = artifacts or {}
        self.engines: dict[str, Any] = {}
        self.rags: dict[str, Any] = {}
        self.router: Any = None
        self.metrics = Metrics()
        self.lock = threading.Lock()
        if config.get("router"):
            from sdk.backends.route import Router

            self.router = Router.load(Path(config["router"]))
        if preload:
            for name, v in config["variants"].items():
                if v["type"] in ("model", "rag"):
                    self._ready(name)

    @property
    def models(self) -> list[str]:
        return (["auto"] if self.router is not None or self.config.get("domain_target") else []) + sorted(self.config["variants"])

    # ------------------------------------------------------------------------------------------ variants
    def _engine(self, name: str) -> Any:
        with self.lock:
            if name not in self.engines:
                from sdk.backends.models import ModelHandle
                from sdk.serving.engine import LocalEngine

                v = self.config["variants"][name]
                h = ModelHandle(model=v["model"], adapter=v.get("adapter"), tokenizer=v.get("tokenizer"))
                self.engines[name] = LocalEngine(h, int(self.config.get("max_batch_size", 8)), name)
            return self.engines[name]

    def _rag(self, name: str) -> Any:
        with self.lock:
            if name not in self.rags:
                from sdk.backends.rag import RagSystem

                v = self.config["variants"][name]
                self.rags[name] = RagSystem.open(self.spec, v["label"], self.artifacts, with_generator=False)
        return self.rags[name]

    def _ready(self, name: str) -> None:
        v = self.config["variants"][name]
        if v["type"] == "model":
            self._engine(name)
        elif v["type"] == "rag":
            self._rag(name)
            name_of_gen = v.get("generator") if isinstance(v.get("generator"), str) else ""
            gen = self.config["variants"].get(name_of_gen, {})
            if gen.get("type") == "model":
                self._engine(v["generator"])

    def complete(self, name: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """Answer with one variant: {"text", "prompt_tokens", "completion_tokens", "sources"?}."""
        if name not in self.config["variants"]:
            raise KeyError(name)
        v = self.config["variants"][name]
        timeout = float(self.config.get("timeout", 60))
        if v["type"] == "model":
            text, p, c = self._engine(name).generate(messages, max_tokens, timeout=timeout)
            return {"text": text, "prompt_tokens": p, "completion_tokens": c}
        if v["type"] == "endpoint":
            return call_endpoint(v, messages, max_tokens, timeout)
        rag = self._rag(name)
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
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
            text, p, c = self._engine(gen).generate([{"role": "user", "content": prompt}], max_tokens, timeout=timeout)
            answer = {"text": text, "prompt_tokens": p, "completion_tokens": c}
        answer["sources"] = [{"index": i + 1, "id": d["id"], "source": d["meta"].get("source"),
                              "page": d["meta"].get("page"), "score": d["score"], "content": d["content"]}
                             for i, d in enumerate(docs)]
        return answer

    def resolve(self, requested: str, messages: list[dict[str, str]]) -> tuple[str, Optional[dict[str, Any]]]:
        """(variant name, routing decision) for a request's model field."""
        if requested != "auto":
            return requested, None
        if self.router is None:
            return str(self.config.get("domain_target")), None
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        decision = self.router.route(question)
        system = decision.get("system")
        if decision["target"] == "general":
            general = self.config.get("general")
            system = "general" if isinstance(general, dict) else general
        return str(system), decision

    def answer(self, requested: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        name, decision = self.resolve(requested, messages)
        if name in (None, "None"):
            raise UpstreamError("the router sent this query to the general target, and none is configured")
        started = time.time()
        try:
            out = self.complete(name, messages, max_tokens)
            out.update(target=name, fallback=False, routing=decision)
            self.metrics.observe(name, "ok", time.time() - started, out.get("completion_tokens", 0))
            return out
        except KeyError:
            raise
        except Exception as e:  # noqa: BLE001 - the domain target failed: fall back when we can
            self.metrics.observe(name, "error", time.time() - started)
            general = self.config.get("general")
            fallback = "general" if isinstance(general, dict) else general
            if requested != "auto" or not fallback or fallback == name:
                raise UpstreamError(f"{name} failed: {type(e).__name__}: {e}") from None
            out = self.complete(fallback, messages, max_tokens)
            with self.metrics.lock:
                self.metrics.fallbacks += 1
            out.update(target=fallback, fallback=True, routing=decision, fallback_reason=f"{name}: {type(e).__name__}")
            return out


def call_endpoint(v: dict[str, Any], messages: list[dict[str, str]], max_tokens: int, timeout: float) -> dict[str, Any]:
    import httpx

    headers = {}
    if v.get("api_key_env"):
        headers["Authorization"] = f"Bearer {os.environ.get(v['api_key_env'], '')}"
    try:
        r = httpx.post(f"{v['url']}/chat/completions", json={"model": v["model"], "messages": messages,
                                                               "max_tokens": max_tokens}, headers=headers,
                       timeout=min(timeout, float(v.get("timeout", timeout))))
    except httpx.HTTPError as e:
        raise UpstreamError(f"{v['url']} unreachable: {type(e).__name__}") from None
    if r.status_code != 200:
        raise UpstreamError(f"{v['url']} answered {r.status_code}")
    data = r.json()
    usage = data.get("usage") or {}
    return {"text": data["choices"][0]["message"].get("content") or "",
            "prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0)}


def error(status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
          code: Optional[str] = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def create_app(gateway: Gateway) -> Any:
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config = gateway.config
    key_env = config.get("api_key_env")
    limit = int(config.get("max_request_bytes", 1_000_000))
    max_tokens_cap = int(config.get("max_tokens", 256))
    app = FastAPI(title=f"dsl gateway: {config.get('domain')}", docs_url=None, redoc_url=None)
    app.state.gateway = gateway

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1/"):
            if key_env:
                expected = os.environ.get(key_env, "")
                got = request.headers.get("authorization", "")
                if not expected or got != f"Bearer {expected}":
                    gateway.metrics.error(401)
                    return error(401, "missing or wrong API key: send Authorization: Bearer <key>", "authentication_error",
                                 code="invalid_api_key")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limit:
                gateway.metrics.error(413)
                return error(413, f"request body is larger than {limit} bytes", code="request_too_large")
        try:
            return await call_next(request)
        except Exception as e:  # noqa: BLE001 - never a 500 with a traceback
            gateway.metrics.error(500)
            return error(500, f"internal error: {type(e).__name__}", "server_error")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        gateway.metrics.error(400)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"invalid request: {first.get('msg', 'malformed body')}" + (f" ({param})" if param else ""),
                     param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        gateway.metrics.error(exc.status_code)
        return error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "domain": config.get("domain"), "models": gateway.models}

    @app.get("/metrics")
    def metrics() -> Any:
        return PlainTextResponse(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "dsl"}
                                           for m in gateway.models]}

    async def run(requested: str, messages: list[dict[str, str]], max_tokens: int) -> Any:
        if requested not in gateway.models:
            return error(404, f"unknown model {requested!r}; available: {', '.join(gateway.models)}", param="model",
                         code="model_not_found")
        try:
            return await asyncio.to_thread(gateway.answer, requested, messages, max_tokens)
        except UpstreamError as e:
            gateway.metrics.error(503)
            return error(503, str(e), "server_error", code="upstream_unavailable")

    def headers(out: dict[str, Any]) -> dict[str, str]:
        return {"X-DSL-Target": out["target"], "X-DSL-Fallback": "true" if out["fallback"] else "false"}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        from fastapi.responses import JSONResponse

        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        cap = min(req.max_completion_tokens or req.max_tokens or max_tokens_cap, max_tokens_cap)
        out = await run(req.model, messages, cap)
        if not isinstance(out, dict):
            return out
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        extra = {"dsl_target": out["target"], "dsl_fallback": out["fallback"]}
        if "sources" in out:
            extra["sources"] = out["sources"]
        if req.stream:
            def events() -> Any:
                base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model, **extra}
                yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}]})}\n\n"
                words = out["text"].split(" ")
                for i, w in enumerate(words):
                    piece = w if i == 0 else " " + w
                    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'content': piece}, 'finish_reason': None}]})}\n\n"
                yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers(out))
        body = {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": out.get("prompt_tokens", 0), "completion_tokens": out.get("completion_tokens", 0),
                          "total_tokens": out.get("prompt_tokens", 0) + out.get("completion_tokens", 0)}, **extra}
        return JSONResponse(body, headers=headers(out))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        from fastapi.responses import JSONResponse

        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            return error(400, "prompt is empty", param="prompt")
        cap = min(req.max_tokens or max_tokens_cap, max_tokens_cap)
        choices, last = [], None
        for i, p in enumerate(prompts):
            out = await run(req.model, [{"role": "user", "content": p}], cap)
            if not isinstance(out, dict):
                return out
            choices.append({"index": i, "text": out["text"], "finish_reason": "stop"})
            last = out
        assert last is not None
        body = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": req.model, "choices": choices, "dsl_target": last["target"], "dsl_fallback": last["fallback"]}
        return JSONResponse(body, headers=headers(last))

    return app


def serve(gateway: Gateway, host: str, port: int, log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(create_app(gateway), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                access_log=False)
