"""The gateway's HTTP API (FastAPI), assembled from small route modules: :mod:`~sdk.serving.routes_info`
(/health, /metrics, /v1/models), :mod:`~sdk.serving.routes_chat` (/v1/chat/completions, with stream=true as
server-sent events) and :mod:`~sdk.serving.routes_completions` (/v1/completions); what they share is in
:mod:`~sdk.serving.routes_common`, every streamed chunk is built in :mod:`~sdk.serving.chunks`. :func:`serve` runs
the app on uvicorn. Every response says which target served it (header ``X-DSL-Target`` and field ``dsl_target``);
a fallback to the general target is marked (``X-DSL-Fallback: true``, ``dsl_fallback``). A client that
disconnects before its answer cancels its generation."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the handlers' annotations from these globals

from sdk.serving.protocol import error


def create_app(gateway: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from sdk.serving import routes_chat, routes_completions, routes_info
    from sdk.serving.asgi import Guard
    from sdk.upstream import reserved_threads

    config = gateway.config
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
        return error(400, f"invalid request: {str(first.get('msg', 'malformed body')).removeprefix('Value error, ')}" + (f" ({param})" if param else ""),
                     param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        gateway.metrics.error(exc.status_code)
        code = {413: "request_too_large", 408: "request_timeout"}.get(exc.status_code)
        return error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                     code=code)

    for routes in (routes_info, routes_chat, routes_completions):
        app.include_router(routes.router)
    return app


def serve(gateway: Any, host: str, port: int, log_level: str = "warning") -> None:
    import uvicorn

    from sdk.serving.asgi import server_config

    config = server_config(create_app(gateway), host, port, gateway.config["header_timeout"],
                           log_level=log_level, body_timeout=gateway.config["body_timeout"],
                           timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
