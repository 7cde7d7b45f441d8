"""``/v1/chat/completions``: an answer whole, or streamed (``stream=true``): token by token as the local engine
makes them when the target is a local model, else the whole answer sent in chunks. The chunks are built in
:mod:`sdk.serving.chunks`."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sdk.serving.chunks import DONE, ChatChunks, described, headers, upstream_error
from sdk.serving.protocol import ChatRequest, ClientGone, UpstreamError
from sdk.serving.routes_common import CountedStream, gateway_of, refused, run

router = APIRouter()


async def token_stream(gateway: Any, requested: str, messages: list[dict[str, str]], cap: int, rid: str,
                       created: int) -> Optional[Any]:
    """A stream sent token by token as the local engine makes them, when the target is a local model (other
    targets answer whole, then in chunks). None when the target is not a local model. A client that disconnects
    stops the stream, which cancels its generation."""
    try:
        name, decision = await asyncio.to_thread(gateway.resolve, requested, messages)
    except Exception:  # noqa: BLE001 - withheld, or routing trouble: the whole-answer path says what
        return None
    if gateway.config["variants"].get(name, {}).get("type") != "model" or name in gateway.withheld:
        return None
    out = {"target": name, "fallback": False, "routing": decision}
    chunks = ChatChunks(rid, created, requested, out)

    async def events() -> Any:
        cancel = threading.Event()
        pieces = gateway.stream(name, messages, cap, cancel)
        try:
            yield chunks.first()
            while True:
                piece = await asyncio.to_thread(next, pieces, None)
                if piece is None:
                    break
                yield chunks.piece(piece)
            yield chunks.stop()
        except ClientGone:
            return
        except UpstreamError as e:
            gateway.metrics.error(503)
            yield upstream_error(str(e))
        finally:
            cancel.set()  # a no-op once generation is done; stops it when the client left mid-stream
        yield DONE

    return CountedStream(events(), gateway, headers=headers(out))


@router.post("/v1/chat/completions")
async def chat(req: ChatRequest, request: Request) -> Any:
    gateway = gateway_of(request)
    cap_max = gateway.config["max_tokens"]
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    cap = min(req.max_completion_tokens or req.max_tokens or cap_max, cap_max)
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if req.stream and refused(gateway, req.model) is None:
        live = await token_stream(gateway, req.model, messages, cap, rid, created)
        if live is not None:
            return live
    outs = await run(request, req.model, [messages], cap)
    if not isinstance(outs, list):
        return outs
    out = outs[0]
    if req.stream:
        return CountedStream(iter(ChatChunks(rid, created, req.model, out).whole(out["text"])), gateway,
                             headers=headers(out))
    usage = {"prompt_tokens": out.get("prompt_tokens", 0), "completion_tokens": out.get("completion_tokens", 0)}
    body = {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]}, "finish_reason": "stop"}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}, **described(out)}
    return JSONResponse(body, headers=headers(out))
