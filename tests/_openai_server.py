"""A small real OpenAI-compatible HTTP server for tests: FastAPI on uvicorn, in a daemon thread, on a free port.

``handler(body, request)`` is called for every ``POST /v1/chat/completions`` and returns the reply: a dict (sent as
JSON) or any FastAPI response. :func:`chat_completion` builds a well-formed reply. Use it as a context manager::

    with OpenAIServer(lambda body, request: chat_completion("hi", model=body["model"])) as server:
        url = f"http://127.0.0.1:{server.port}/v1"
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request  # module level: FastAPI resolves the handler's annotations from these globals

if TYPE_CHECKING:
    from typing_extensions import Self


def chat_completion(content: str, model: str = "m", usage: bool = True) -> dict[str, Any]:
    """A minimal ``chat.completion`` response with one assistant message."""
    reply: dict[str, Any] = {
        "id": "x", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    if usage:
        reply["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return reply


class OpenAIServer:
    """Starts on construction (``port`` is set then); :meth:`stop` or leaving the ``with`` block shuts it down."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], Any]) -> None:
        import uvicorn
        from fastapi import FastAPI

        app = FastAPI()

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> Any:
            return handler(await request.json(), request)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
