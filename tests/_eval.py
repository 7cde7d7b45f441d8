"""Helpers for the evaluation tests: a tiny local model, recipes, and a real OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handler's (string) annotations here

MC_ITEMS = [
    ("q1", "Which SIP request starts a call?", ["INVITE", "BYE", "ACK"], "INVITE"),
    ("q2", "Which SIP request ends a call?", ["INVITE", "BYE", "ACK"], "BYE"),
    ("q3", "Which protocol carries the media of a call?", ["RTP", "SIP", "Diameter"], "RTP"),
    ("q4", "Which node stores the subscriber profiles?", ["RTP", "HSS", "SDP"], "HSS"),
    ("q5", "Which protocol describes the media offer and answer?", ["SDP", "BYE", "HSS"], "SDP"),
    ("q6", "Which protocol carries authentication between the HSS and the CSCF?", ["Diameter", "RTP", "ACK"], "Diameter"),
    ("q7", "What runs voice over LTE with IMS?", ["VoLTE", "WebRTC", "PSTN"], "VoLTE"),
    ("q8", "Which response tells the caller the phone is ringing?", ["180 Ringing", "200 OK", "404 Not Found"], "180 Ringing"),
]


def write_mc_set(path: Path, items: list[tuple[str, str, list[str], str]] = MC_ITEMS) -> Path:
    path.write_text("".join(json.dumps({"id": i, "question": q, "choices": c, "answer": a}) + "\n"
                            for i, q, c, a in items))
    return path


def tiny_model(folder: Path, seed: int = 0) -> Path:
    from sdk.backends.training.common import make_tiny_model

    target = folder / f"tiny-{seed}"
    if not (target / "config.json").exists():
        make_tiny_model(target, seed=seed)
    return target


def local_model(folder: Path, model: Path) -> Any:
    """The eval step's LocalModel over a local model folder, as a base_model block would give it."""
    from sdk.backends.base import Artifact
    from sdk.backends.eval.evaluate import LocalModel
    from sdk.backends.models import handle

    return LocalModel(handle(Artifact("base_model.a", folder, {"outputs": {"model": str(model), "model_source": "local"}})))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def openai_server(reply: Callable[[list[dict[str, Any]], int], str | None],
                  auth: list[str] | None = None) -> Iterator[str]:
    """A real OpenAI-compatible chat server on 127.0.0.1 (FastAPI + uvicorn in a thread). ``reply(messages,
    request_number)`` returns the answer text, or None to answer HTTP 503; ``auth`` collects the Authorization
    headers. Yields the base URL (…/v1)."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    counter = {"n": 0}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if auth is not None:
            auth.append(request.headers.get("authorization", ""))
        counter["n"] += 1
        text = reply(body["messages"], counter["n"])
        if text is None:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=503)
        return {"id": f"c{counter['n']}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
