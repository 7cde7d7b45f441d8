"""Every streamed chunk of the gateway, built here: server-sent events of OpenAI's ``chat.completion.chunk`` and
``text_completion`` objects, each carrying which target served it (``dsl_target``, ``dsl_fallback``), the first
one the answer's other fields too (routing decision, RAG sources: long, so sent once); and the error event and
``[DONE]`` that end a stream."""

from __future__ import annotations

import json
from typing import Any, Optional

DONE = "data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


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


class ChatChunks:
    """The chunks of one streamed chat answer: ``first()`` (the role, and the answer's fields), ``piece(text)``
    for each piece of text, ``stop()``, then :data:`DONE`."""

    def __init__(self, rid: str, created: int, model: str, out: dict[str, Any]) -> None:
        self.out = out
        self.base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "dsl_target": out["target"], "dsl_fallback": out["fallback"]}

    def _chunk(self, delta: dict[str, Any], finish: Optional[str], **extra: Any) -> str:
        return sse({**self.base, **extra, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def first(self) -> str:
        return self._chunk({"role": "assistant", "content": ""}, None, **described(self.out))

    def piece(self, text: str) -> str:
        return self._chunk({"content": text}, None)

    def stop(self) -> str:
        return self._chunk({}, "stop")

    def whole(self, text: str) -> list[str]:
        """A whole answer sent as a stream: word by word (spaces kept with the words that follow them)."""
        words = text.split(" ")
        return [self.first()] + [self.piece(w if i == 0 else " " + w) for i, w in enumerate(words)] + \
            [self.stop(), DONE]


def completion_chunks(rid: str, created: int, model: str, outs: list[dict[str, Any]]) -> list[str]:
    """A streamed ``/v1/completions`` answer: per prompt, its text (with the answer's fields) then its stop."""
    last = outs[-1]
    base = {"id": rid, "object": "text_completion", "created": created, "model": model,
            "dsl_target": last["target"], "dsl_fallback": last["fallback"]}
    events = []
    for i, out in enumerate(outs):
        events.append(sse({**base, **described(out), "choices": [{"index": i, "text": out["text"],
                                                                  "finish_reason": None, "logprobs": None}]}))
        events.append(sse({**base, "choices": [{"index": i, "text": "", "finish_reason": "stop", "logprobs": None}]}))
    return events + [DONE]


def upstream_error(message: str) -> str:
    """The event that ends a stream whose generation failed after it began (its status was already sent)."""
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": "upstream_unavailable"}})
