"""``/v1/completions``: up to 64 prompts answered together (so the local engine batches them), whole or streamed."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sdk.serving.chunks import completion_chunks, described, headers
from sdk.serving.protocol import CompletionRequest, error
from sdk.serving.routes_common import CountedStream, gateway_of, run

router = APIRouter()
MAX_PROMPTS = 64


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request) -> Any:
    gateway = gateway_of(request)
    cap_max = gateway.config["max_tokens"]
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not prompts:
        return error(400, "prompt is empty", param="prompt")
    if len(prompts) > MAX_PROMPTS:
        return error(400, f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", param="prompt")
    cap = min(req.max_tokens or cap_max, cap_max)
    outs = await run(request, req.model, [[{"role": "user", "content": p}] for p in prompts], cap)
    if not isinstance(outs, list):
        return outs
    last = outs[-1]
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if req.stream:
        return CountedStream(iter(completion_chunks(rid, created, req.model, outs)), gateway, headers=headers(last))
    prompt_tokens = sum(o.get("prompt_tokens", 0) for o in outs)
    completion_tokens = sum(o.get("completion_tokens", 0) for o in outs)
    body = {"id": rid, "object": "text_completion", "created": created, "model": req.model,
            "choices": [{"index": i, "text": o["text"], "finish_reason": "stop", "logprobs": None}
                        for i, o in enumerate(outs)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}, **described(last)}
    return JSONResponse(body, headers=headers(last))
