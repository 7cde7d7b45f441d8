"""The gateway's HTTP API (FastAPI): /v1/models, /v1/chat/completions (with stream=true as server-sent events),
/v1/completions, /health and /metrics; and :func:`serve`, which runs it on uvicorn. Every response says which
target served it (header ``X-DSL-Target`` and field ``dsl_target``); a fallback to the general target is marked
(``X-DSL-Fallback: true``, ``dsl_fallback``). A client that disconnects before its answer cancels its
generation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import Request  # module level: FastAPI resolves the endpoints' annotations from these globals

from sdk.serving.protocol import ChatRequest, ClientError, ClientGone, CompletionRequest, UpstreamError, error


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(gateway: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.responses import StreamingResponse as _StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from sdk.serving.asgi import Guard
    from sdk.serving.protocol import Withheld
    from sdk.upstream import reserved_threads

    class StreamingResponse(_StreamingResponse):  # type: ignore[misc, valid-type]
        """A stream whose client leaves before its end is counted in ``dsl_disconnects`` (and its generator
        closed at once, which cancels its generation)."""

        async def stream_response(self, send: Any) -> None:
            finished = False
            try:
                await super().stream_response(send)
                finished = True
            finally:
                if not finished:
                    gateway.metrics.disconnects.inc()
                    gateway.metrics.stream_disconnects.inc()
                    closing = getattr(self.body_iterator, "aclose", None)
                    if closing is not None:
                        try:
                            await closing()
                        except BaseException:  # noqa: BLE001 - the client is gone; nothing to report to it
                            pass

    config = gateway.config
    max_tokens_cap = config["max_tokens"]
    # requests wait for the engine in threads: enough of them that a full batch can queue up, plus the most that
    # the endpoints' own pools can hold (2 * pool each), so slow upstreams never take the local models' threads
    endpoints = [v for v in config["variants"].values() if v.get("type") == "endpoint"]
    endpoints += [v["generator"] for v in config["variants"].values() if isinstance(v.get("generator"), dict)]
    threads = max(32, 4 * config["max_batch_size"]) + reserved_threads(endpoints)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="gateway"))
        yield

    app = FastAPI(title=f"dsl gateway: {config.get('domain')}", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.gateway = gateway
    app.add_middleware(Guard, gateway=gateway, key_env=config.get("api_key_env"),
                       limit=config["max_request_bytes"],
                       body_timeout=config["body_timeout"])

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
        code = {413: "request_too_large", 408: "request_timeout"}.get(exc.status_code)
        return error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                     code=code)

    def withheld_list() -> list[dict[str, str]]:
        return [{"id": n, "reason": r} for n, r in sorted(gateway.withheld.items())]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "domain": config.get("domain"), "models": gateway.models, "withheld": gateway.withheld}

    @app.get("/metrics")
    def metrics() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "dsl"}
                                           for m in gateway.models], "withheld": withheld_list()}

    def refused(requested: str) -> Optional[Any]:
        if requested in gateway.withheld:
            return error(404, f"model {requested!r} is withheld from serving: {gateway.withheld[requested]}",
                         param="model", code="model_not_found")
        if requested not in gateway.models:
            return error(404, f"unknown model {requested!r}; available: {', '.join(gateway.models)}", param="model",
                         code="model_not_found")
        return None

    async def run(request: Request, requested: str, conversations: list[list[dict[str, str]]], max_tokens: int) -> Any:
        """The answers for each conversation (run concurrently, so the local engine batches them), or the error
        response. When the client disconnects first, their generation is cancelled."""
        no = refused(requested)
        if no is not None:
            gateway.metrics.error(404)
            return no
        cancel = threading.Event()
        work = asyncio.gather(*(asyncio.to_thread(gateway.answer, requested, m, max_tokens, cancel)
                                for m in conversations), return_exceptions=True)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            cancel.set()  # the engine drops the queued requests and stops the running ones at the next token
            gateway.metrics.disconnects.inc()
            work.add_done_callback(lambda f: f.exception())  # nobody awaits it any more
            return error(499, "the client closed the request", code="client_closed_request")
        outs = work.result()
        for o in outs:
            if isinstance(o, BaseException):
                return failure(o)
        return outs

    def failure(e: BaseException) -> Any:
        if isinstance(e, UpstreamError):
            status, out = 503, error(503, str(e), "server_error", code="upstream_unavailable")
        elif isinstance(e, ClientError):
            status, out = 400, error(400, str(e), param=e.param)
        elif isinstance(e, Withheld):
            status, out = 404, error(404, str(e), param="model", code="model_not_found")
        elif isinstance(e, KeyError):
            status, out = 404, error(404, "unknown model", param="model", code="model_not_found")
        elif isinstance(e, ClientGone):
            status, out = 499, error(499, "the client closed the request", code="client_closed_request")
        else:
            raise e
        gateway.metrics.error(status)
        return out

    def described(out: dict[str, Any]) -> dict[str, Any]:
        """The fields every answer carries: which target served it, fallback, routing decision, RAG sources."""
        extra: dict[str, Any] = {"dsl_target": out["target"], "dsl_fallback": out["fallback"]}
        if out.get("fallback_reason"):
            extra["dsl_fallback_reason"] = out["fallback_reason"]
        if out.get("routing"):
            r = out["routing"]
            extra["dsl_routing"] = {"target": r["target"], "probability": round(float(r["probability"]), 4)}
        if "sources" in out:
            extra["sources"] = out["sources"]
        return extra

    def headers(out: dict[str, Any]) -> dict[str, str]:
        return {"X-DSL-Target": out["target"], "X-DSL-Fallback": "true" if out["fallback"] else "false"}

    def sse(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    async def token_stream(requested: str, messages: list[dict[str, str]], cap: int, rid: str, created: int) -> Any:
        """A stream sent token by token as the local engine makes them, when the target is a local model (other
        targets answer whole, then in chunks). None when the target is not a local model. A client that
        disconnects stops the stream, which cancels its generation."""
        try:
            name, decision = await asyncio.to_thread(gateway.resolve, requested, messages)
        except Exception:  # noqa: BLE001 - withheld, or routing trouble: the whole-answer path says what
            return None
        if gateway.config["variants"].get(name, {}).get("type") != "model" or name in gateway.withheld:
            return None
        out = {"target": name, "fallback": False, "routing": decision}
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": requested,
                "dsl_target": name, "dsl_fallback": False}

        async def events() -> Any:
            cancel = threading.Event()
            pieces = gateway.stream(name, messages, cap, cancel)
            try:
                yield sse({**base, **described(out), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                                  "finish_reason": None}]})
                while True:
                    piece = await asyncio.to_thread(next, pieces, None)
                    if piece is None:
                        break
                    yield sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            except ClientGone:
                return
            except UpstreamError as e:
                gateway.metrics.error(503)
                yield sse({"error": {"message": str(e), "type": "server_error", "param": None,
                                     "code": "upstream_unavailable"}})
            finally:
                cancel.set()  # a no-op once generation is done; stops it when the client left mid-stream
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers(out))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        cap = min(req.max_completion_tokens or req.max_tokens or max_tokens_cap, max_tokens_cap)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream and refused(req.model) is None:
            live = await token_stream(req.model, messages, cap, rid, created)
            if live is not None:
                return live
        outs = await run(request, req.model, [messages], cap)
        if not isinstance(outs, list):
            return outs
        out = outs[0]
        extra = described(out)
        if req.stream:
            def events() -> Any:
                # dsl_target / dsl_fallback on every chunk; sources (which can be long) on the first one only
                base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                        "dsl_target": out["target"], "dsl_fallback": out["fallback"]}
                yield sse({**base, **extra, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "finish_reason": None}]})
                for i, w in enumerate(out["text"].split(" ")):
                    piece = w if i == 0 else " " + w
                    yield sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers(out))
        usage = {"prompt_tokens": out.get("prompt_tokens", 0), "completion_tokens": out.get("completion_tokens", 0)}
        body = {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]}, "finish_reason": "stop"}],
                "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}, **extra}
        return JSONResponse(body, headers=headers(out))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            return error(400, "prompt is empty", param="prompt")
        if len(prompts) > 64:
            return error(400, f"at most 64 prompts per request, got {len(prompts)}", param="prompt")
        cap = min(req.max_tokens or max_tokens_cap, max_tokens_cap)
        outs = await run(request, req.model, [[{"role": "user", "content": p}] for p in prompts], cap)
        if not isinstance(outs, list):
            return outs
        last = outs[-1]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            def events() -> Any:
                base = {"id": rid, "object": "text_completion", "created": created, "model": req.model,
                        "dsl_target": last["target"], "dsl_fallback": last["fallback"]}
                for i, out in enumerate(outs):
                    yield sse({**base, **described(out), "choices": [{"index": i, "text": out["text"],
                                                                      "finish_reason": None, "logprobs": None}]})
                    yield sse({**base, "choices": [{"index": i, "text": "", "finish_reason": "stop", "logprobs": None}]})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers(last))
        prompt_tokens = sum(o.get("prompt_tokens", 0) for o in outs)
        completion_tokens = sum(o.get("completion_tokens", 0) for o in outs)
        body = {"id": rid, "object": "text_completion", "created": created, "model": req.model,
                "choices": [{"index": i, "text": o["text"], "finish_reason": "stop", "logprobs": None}
                            for i, o in enumerate(outs)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}, **described(last)}
        return JSONResponse(body, headers=headers(last))

    return app


def serve(gateway: Any, host: str, port: int, log_level: str = "warning") -> None:
    import uvicorn

    from sdk.serving.asgi import server_config

    config = server_config(create_app(gateway), host, port, gateway.config["header_timeout"],
                           log_level=log_level, body_timeout=gateway.config["body_timeout"],
                           timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
