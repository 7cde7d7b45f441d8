"""Calls to OpenAI-compatible upstreams (an endpoint variant, a rag generator, the general target) through the
official ``openai`` client: its timeouts, and its retries with exponential backoff (up to the endpoint's
``max_retries``; connection errors, timeouts, 408/409/429 and 5xx are retried, ``Retry-After`` is honoured).
Every failure becomes an :class:`UpstreamError` whose message says what went wrong without internals."""

from __future__ import annotations

import os
import threading
from typing import Any

from sdk.serving.protocol import UpstreamError

_clients: dict[tuple[str, str, float, int], Any] = {}
_lock = threading.Lock()


def client(v: dict[str, Any], timeout: float) -> tuple[Any, dict[str, Any]]:
    """One client (and connection pool) per endpoint, key, timeout and retry count, and the request's extra headers."""
    from openai import Omit, OpenAI

    key = os.environ.get(v["api_key_env"], "") if v.get("api_key_env") else ""
    t = min(timeout, float(v.get("timeout", timeout)))
    retries = int(v.get("max_retries", 3))
    with _lock:
        ident = (v["url"], key, t, retries)
        if ident not in _clients:
            _clients[ident] = OpenAI(base_url=v["url"], api_key=key or "unused", timeout=t, max_retries=retries)
        return _clients[ident], ({} if key else {"Authorization": Omit()})  # no key: no Authorization header


def call_endpoint(v: dict[str, Any], messages: list[dict[str, str]], max_tokens: int, timeout: float) -> dict[str, Any]:
    """{"text", "prompt_tokens", "completion_tokens"} from the endpoint's first choice."""
    import openai

    try:
        openai_client, headers = client(v, timeout)
        reply = openai_client.chat.completions.create(model=v["model"], messages=messages, max_tokens=max_tokens,
                                                      extra_headers=headers)
    except openai.APITimeoutError:
        raise UpstreamError("the upstream timed out") from None
    except openai.APIConnectionError:
        raise UpstreamError("the upstream is unreachable") from None
    except openai.APIStatusError as e:
        raise UpstreamError(f"the upstream answered {e.status_code}") from None
    except Exception:  # noqa: BLE001 - a body that is not a chat completion at all
        raise UpstreamError("the upstream sent a malformed answer") from None
    if not hasattr(reply, "choices"):  # e.g. an HTML page: the client hands back the text
        raise UpstreamError("the upstream sent a malformed answer")
    choices = reply.choices
    if not isinstance(choices, list) or not choices:
        raise UpstreamError("the upstream answered without choices")
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None)
    if text is not None and not isinstance(text, str):
        raise UpstreamError("the upstream sent a malformed answer")
    usage = getattr(reply, "usage", None)

    def count(name: str) -> int:
        n = getattr(usage, name, 0) if usage is not None else 0
        return n if isinstance(n, int) else 0

    return {"text": text or "", "prompt_tokens": count("prompt_tokens"), "completion_tokens": count("completion_tokens")}
