"""The gateway's HTTP guards, below FastAPI: an ASGI middleware for auth (``/v1``, ``/openapi.json`` and
``/docs`` when a key is set), body size and body-read time limits and a last-resort 500 without internals; and a
uvicorn h11 protocol that closes connections whose request headers or body do not arrive in time, and those
answered before their body was read (slow or stalled clients)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import Any, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sdk.records.serve import default
from sdk.serving.protocol import error

log = logging.getLogger("dsl.gateway")
PROTECTED = ("/v1/", "/openapi.json", "/docs")


class Guard:
    """Auth (timing-safe), a Content-Length over ``limit`` (413), a body (chunked or not) past ``limit`` bytes
    (413, reading stops) or not read within ``body_timeout`` seconds (408), and a 500 that names nothing."""

    def __init__(self, app: Any, gateway: Any, key_env: Optional[str], limit: int, body_timeout: float) -> None:
        self.app, self.gateway, self.key_env, self.limit, self.body_timeout = app, gateway, key_env, limit, body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = None
        if self.key_env and path.startswith(PROTECTED):
            expected = os.environ.get(self.key_env, "")
            got = headers.get("authorization", "")
            if not expected or not hmac.compare_digest(got.encode(), f"Bearer {expected}".encode()):
                refusal = error(401, "missing or wrong API key: send Authorization: Bearer <key>", "authentication_error",
                                code="invalid_api_key")
        length = headers.get("content-length", "")
        if refusal is None and length.isdigit() and int(length) > self.limit:
            refusal = error(413, f"request body is larger than {self.limit} bytes", code="request_too_large")
        if refusal is not None:
            self.gateway.metrics.error(refusal.status_code)
            await refusal(scope, receive, send)
            return
        seen, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def limited() -> Any:
            nonlocal seen, complete
            from starlette.exceptions import HTTPException

            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body was not received within {self.body_timeout:g}s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    raise HTTPException(413, f"request body is larger than {self.limit} bytes")
            return message

        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except Exception as e:  # noqa: BLE001 - never a 500 with a traceback or an exception's name
            log.warning("internal error on %s: %s: %s", path, type(e).__name__, e)
            if not started:
                self.gateway.metrics.error(500)
                await error(500, "internal error", "server_error")(scope, receive, send)


class BodyLimit:
    """A request body over ``limit`` bytes is refused with 413, by its Content-Length before anything is read, or
    as it arrives (chunked): for the apps other than the gateway (``dsl ui``), whose routes read forms whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            from starlette.responses import PlainTextResponse

            await PlainTextResponse(f"request body is larger than {self.limit} bytes\n", 413)(scope, receive, send)
            return
        seen, started, refused = 0, False, False

        async def limited() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answered here; the app sees the client gone and its sends are dropped
                    refused = True
                    if not started:
                        await send({"type": "http.response.start", "status": 413,
                                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                        await send({"type": "http.response.body",
                                    "body": f"request body is larger than {self.limit} bytes\n".encode()})
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Any) -> None:
            nonlocal started
            if not refused:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, limited, tracked)
        except Exception:  # noqa: BLE001 - the app failing on the disconnect it was shown: already answered 413
            if not refused:
                raise


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with timeouts that fire in every state of a connection (uvicorn itself only times out
    idle keep-alives): request headers must be complete ``header_timeout`` seconds after the connection opened or
    after its previous response, and a request body ``body_timeout`` seconds (plus a second of grace, so that the
    app's 408 goes out first) after its headers, or the connection is closed; a client that stops reading its
    answer (the send buffer stays full) is closed after ``body_timeout`` seconds too (a slow-read attack). A response sent before its request
    body was read in full (a 401, 408 or 413) closes the connection too: the rest of the body is never waited for."""

    header_timeout: float = default("header_timeout")
    body_timeout: float = default("body_timeout")

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow, h11.IDLE)

    def _disarm(self) -> None:
        for name in ("_header_timer", "_body_timer"):
            timer = getattr(self, name, None)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE and getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None
            if state is h11.SEND_BODY:
                self._body_timer = self.loop.call_later(self.body_timeout + 1.0, self._too_slow, h11.SEND_BODY)
        if state is not h11.SEND_BODY and getattr(self, "_body_timer", None) is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._close()  # answered before the body arrived: do not wait for the rest of it
        super().on_response_complete()
        if not self.transport.is_closing():
            self._disarm()
            self._arm()

    def pause_writing(self) -> None:  # the client stopped reading its answer: it has body_timeout to resume
        super().pause_writing()
        if getattr(self, "_write_timer", None) is None:
            self._write_timer = self.loop.call_later(self.body_timeout, self._stalled)

    def resume_writing(self) -> None:
        timer = getattr(self, "_write_timer", None)
        if timer is not None:
            timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _stalled(self) -> None:
        self._write_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
        self._disarm()
        self.transport.abort()  # not close(): that would wait to flush what the slow reader never reads

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        timer = getattr(self, "_write_timer", None)
        if timer is not None:
            timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def _close(self) -> None:
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app sees http.disconnect and sends nothing more
        self.transport.close()

    def _too_slow(self, state: Any) -> None:
        if self.conn.their_state is state and not self.transport.is_closing():
            self._close()


def server_config(app: Any, host: str, port: int, header_timeout: float = default("header_timeout"),
                  log_level: str = "warning", body_timeout: float = default("body_timeout"), **kw: Any) -> Any:
    """The uvicorn configuration the gateway runs with (``dsl serve`` and the tests alike)."""
    import uvicorn

    protocol = type("GatewayH11", (HeaderTimeoutH11,), {"header_timeout": float(header_timeout),
                                                         "body_timeout": float(body_timeout)})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol, access_log=False,
                          timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024, **kw)
