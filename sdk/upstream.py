"""Calls to OpenAI-compatible endpoints (the gateway's endpoint variants and general target, the endpoint
generators of rag systems, eval systems and judges) through the official ``openai`` client, each under an
END-TO-END deadline and through its endpoint's own bounded pool.

- Deadline: one call, its retries and their backoff included, ends ``timeout`` seconds after it started. Every
  socket operation (connect, each read of headers and body, each write) is given only the time left, and none
  starts after the deadline, so an upstream that drips its answer one byte at a time is cut at the deadline
  instead of resetting a per-read timeout forever.
- Pool: each endpoint (URL and key) has its own connections (``pool``, default 8) and admits at most twice that
  many calls at once (the rest wait for a connection, within their deadline); a call over that is refused at once
  ("the upstream is busy"), so a slow endpoint holds at most ``2 * pool`` threads and never starves other work.
- Retries: up to ``max_retries`` on connection errors, timeouts, 408/409/429 and 5xx, with exponential backoff
  or the upstream's ``Retry-After``, as long as the deadline leaves room.
- Errors: :class:`UpstreamError` with a short message that names what went wrong, never an exception class,
  and never the upstream's body unredacted (see :func:`sdk.cleantext.summary`).

``httpx2`` and ``openai`` are imported inside the functions that use them."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from sdk.cleantext import summary
from sdk.limits import MAX_ANSWER_BYTES, limit

DEFAULT_POOL = 8
_local = threading.local()  # the deadline (time.monotonic()) of the call running on this thread


class UpstreamError(Exception):
    """A target failed (timed out, unreachable, busy, a bad answer): 503 ``upstream_unavailable`` at the gateway,
    or a fallback. The message names what went wrong, never exception classes, internals or credentials.
    ``attempts``: the calls made (retries included)."""

    attempts = 1


def _left() -> Optional[float]:
    deadline = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def _clip(timeout: Optional[float], exc: type[Exception]) -> Optional[float]:
    left = _left()
    if left is None:
        return timeout
    if left <= 0:
        raise exc("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


def _backend() -> Any:
    """An httpcore2 network backend whose every connect, read and write gets at most the calling thread's time left."""
    import httpcore2
    from httpcore2._backends.sync import SyncBackend

    class Stream(httpcore2.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
            data = self.inner.read(max_bytes, _clip(timeout, httpcore2.ReadTimeout))
            got = getattr(_local, "received", None)
            if got is not None:  # within a call: its answer is bounded (an upstream sending 10 GB is cut off)
                _local.received = got + len(data)
                if _local.received > _local.cap:
                    _local.oversized = True
                    raise httpcore2.ReadError("the answer is too large")
            return data

        def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
            self.inner.write(buffer, _clip(timeout, httpcore2.WriteTimeout))

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: Optional[str] = None,
                      timeout: Optional[float] = None) -> Any:
            return Stream(self.inner.start_tls(ssl_context, server_hostname, _clip(timeout, httpcore2.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self.inner.get_extra_info(info)

    class Backend(SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None, local_address: Optional[str] = None,
                        socket_options: Any = None) -> Any:
            return Stream(super().connect_tcp(host, port, _clip(timeout, httpcore2.ConnectTimeout), local_address,
                                              socket_options))

    return Backend()


class _Pool:
    """One endpoint's client, connections (``size``) and admission (``2 * size`` calls at once)."""

    def __init__(self, url: str, key: str, size: int) -> None:
        import httpx2
        from openai import OpenAI

        transport = httpx2.HTTPTransport(limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size))
        transport._pool._network_backend = _backend()  # every socket operation under the call's deadline
        self.size = size
        self.slots = threading.BoundedSemaphore(2 * size)
        self.client = OpenAI(base_url=url, api_key=key or "unused", max_retries=0,
                             http_client=httpx2.Client(transport=transport))


_pools: dict[tuple[str, str, int], _Pool] = {}
_lock = threading.Lock()


def pool(url: str, key: str, size: int = DEFAULT_POOL) -> _Pool:
    """The pool of the endpoint at ``url`` called with ``key``, of ``size`` connections (made on first use)."""
    ident = (url, key, max(1, int(size)))
    with _lock:
        if ident not in _pools:
            _pools[ident] = _Pool(url, key, ident[2])
        return _pools[ident]


@dataclass(frozen=True)
class Target:
    """Where a call goes: ``url``, ``model``, the environment variable holding the key, the end-to-end ``timeout``
    in seconds, ``max_retries`` and the endpoint's ``pool`` size."""

    url: str
    model: str
    api_key_env: Optional[str] = None
    timeout: float = 30.0
    max_retries: int = 3
    pool: int = DEFAULT_POOL

    @classmethod
    def of(cls, endpoint: Any) -> "Target":
        """From a serve.json endpoint dict or a spec ``endpoint {}`` block."""
        if isinstance(endpoint, dict):
            return cls(endpoint["url"], endpoint["model"], endpoint.get("api_key_env"),
                       float(endpoint.get("timeout", 30.0)), int(endpoint.get("max_retries", 3)),
                       int(endpoint.get("pool", DEFAULT_POOL)))
        key = getattr(endpoint, "api_key", None)
        return cls(str(endpoint.url).rstrip("/"), endpoint.model, getattr(key, "env", None) if key else None,
                   float(endpoint.timeout), int(endpoint.max_retries))


def _retry_after(e: Any) -> Optional[float]:
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name)) * scale)
        except (TypeError, ValueError):
            continue
    return None


def chat(target: Target, messages: list[dict[str, str]], max_tokens: int, timeout: Optional[float] = None,
         **params: Any) -> dict[str, Any]:
    """{"text", "prompt_tokens", "completion_tokens"} of the endpoint's first choice, within ``timeout`` seconds
    (default: the target's) from now, or :class:`UpstreamError`."""
    import openai
    from openai import Omit

    key = os.environ.get(target.api_key_env, "") if target.api_key_env else ""
    budget = min(float(timeout), target.timeout) if timeout is not None else target.timeout
    deadline = time.monotonic() + budget
    p = pool(target.url, key, target.pool)
    if not p.slots.acquire(blocking=False):
        raise UpstreamError(f"the upstream is busy ({2 * p.size} calls already waiting or in flight)")
    outer = getattr(_local, "deadline", None)
    _local.deadline = deadline if outer is None else min(outer, deadline)
    headers = {} if key else {"Authorization": Omit()}  # no key: no Authorization header
    cap = limit("DSL_MAX_ANSWER_BYTES", MAX_ANSWER_BYTES)
    try:
        for attempt in range(target.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamError(f"the upstream timed out (no answer within {budget:g}s)")
            _local.received, _local.cap, _local.oversized = 0, cap, False
            try:
                reply = p.client.chat.completions.create(model=target.model, messages=messages, max_tokens=max_tokens,
                                                         extra_headers=headers, timeout=left, **params)
                break
            except openai.APIStatusError as e:
                retryable = e.status_code in (408, 409, 429) or e.status_code >= 500
                failure = UpstreamError(f"the upstream answered {e.status_code}" + _said(e, key))
                if 300 <= e.status_code < 400:  # never followed: the key goes only where the recipe points
                    failure = UpstreamError(f"the upstream answered {e.status_code}, a redirect, which is never "
                                            "followed (point the url at the final address)")
                wait = _retry_after(e)
            except openai.APITimeoutError:
                retryable, wait = True, None
                late = time.monotonic() >= deadline - 0.01
                failure = UpstreamError(f"the upstream timed out (no answer within {budget:g}s)" if late
                                        else "the upstream timed out")
            except openai.APIConnectionError:
                retryable, wait, failure = True, None, UpstreamError("the upstream is unreachable")
                if getattr(_local, "oversized", False):  # not retried: it would send as much again
                    retryable, failure = False, UpstreamError(f"the upstream's answer is larger than {cap:,} bytes "
                                                              "(DSL_MAX_ANSWER_BYTES raises the limit)")
            except Exception:  # noqa: BLE001 - a body that is not a chat completion at all
                raise UpstreamError("the upstream sent a malformed answer") from None
            if wait is None:
                wait = min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())
            if not retryable or attempt == target.max_retries or time.monotonic() + wait >= deadline:
                failure.attempts = attempt + 1
                raise failure from None
            time.sleep(wait)
    finally:
        _local.deadline, _local.received = outer, None
        p.slots.release()
    return _answer(reply)


def _said(e: Any, key: str) -> str:
    """``: <what the upstream's error said>``, summarised and redacted, or nothing."""
    body = getattr(e, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    return f" ({summary(message, [key], 120)})" if isinstance(message, str) and message.strip() else ""


def _answer(reply: Any) -> dict[str, Any]:
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


def reserved_threads(endpoints: list[Any]) -> int:
    """The threads the distinct endpoints of ``endpoints`` can hold at most (``2 * pool`` each)."""
    seen: set[tuple[str, Optional[str], int]] = set()
    for e in endpoints:
        t = Target.of(e)
        seen.add((t.url, t.api_key_env, max(1, t.pool)))
    return sum(2 * size for _, _, size in seen)
