"""What the gateway's routes share: the gateway of a request, refusing an unknown or withheld model, answering
conversations concurrently (cancelled when the client leaves), mapping the gateway's errors to responses, and a
streaming response that counts the clients that leave mid-stream."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Optional

from fastapi import Request
from fastapi.responses import StreamingResponse

from sdk.serving.protocol import ClientError, ClientGone, UpstreamError, Withheld, error


def gateway_of(request: Request) -> Any:
    return request.app.state.gateway


class CountedStream(StreamingResponse):
    """A stream whose client leaves before its end is counted in ``dsl_disconnects`` (and its generator closed at
    once, which cancels its generation)."""

    def __init__(self, content: Any, gateway: Any, **kw: Any) -> None:
        super().__init__(content, media_type="text/event-stream", **kw)
        self.gateway = gateway

    async def stream_response(self, send: Any) -> None:
        finished = False
        try:
            await super().stream_response(send)
            finished = True
        finally:
            if not finished:
                self.gateway.metrics.disconnects.inc()
                self.gateway.metrics.stream_disconnects.inc()
                closing = getattr(self.body_iterator, "aclose", None)
                if closing is not None:
                    try:
                        await closing()
                    except BaseException:  # noqa: BLE001 - the client is gone; nothing to report to it
                        pass


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def refused(gateway: Any, requested: str) -> Optional[Any]:
    """The 404 for a model the gateway does not serve (withheld: with the reason), or None."""
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
    gateway = gateway_of(request)
    no = refused(gateway, requested)
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
            return failure(gateway, o)
    return outs


def failure(gateway: Any, e: BaseException) -> Any:
    """The response for an error the gateway raised (others are raised on, to the last-resort 500)."""
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
