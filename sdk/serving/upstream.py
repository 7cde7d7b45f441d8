"""The gateway's calls to OpenAI-compatible upstreams (an endpoint variant, a rag generator, the general target):
:func:`sdk.upstream.chat`, each under an end-to-end deadline (the endpoint's ``timeout``, at most the serve
block's) and through the endpoint's own bounded pool, with retries and backoff within that deadline. Every failure
becomes an :class:`UpstreamError` whose message says what went wrong without internals."""

from __future__ import annotations

from typing import Any

from sdk.upstream import Target, chat


def call_endpoint(v: dict[str, Any], messages: list[dict[str, str]], max_tokens: int, timeout: float) -> dict[str, Any]:
    """{"text", "prompt_tokens", "completion_tokens"} from the endpoint's first choice, within
    ``min(timeout, v["timeout"])`` seconds in all."""
    return chat(Target.of(v), messages, max_tokens, timeout)
