"""The synth step's teacher: concurrent requests to an OpenAI-compatible endpoint (through :mod:`sdk.upstream`:
end-to-end deadlines, retries on 429/5xx with backoff) or to a model step, a token budget, and a journal.

The journal (``<workdir>/cache/synth/<label>/journal.jsonl``) holds one line per finished request, keyed by a hash
of the request (teacher, messages, max_tokens), written and fsync'd as each request finishes. It lives outside the
step's output folder, so it survives a failed run and a ``kill -9``: a re-run serves every journaled request from
it and asks the teacher only for the others. A torn last line (the process killed mid-write) is ignored."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import DslError
from sdk.hashing import digest
from sdk.state import no_link_below, read_text_nofollow
from sdk.systems import Asker
from sdk.upstream import Target, UpstreamError, chat


class Journal:
    """Finished teacher requests, appended line by line (fsync'd), read back on a re-run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        no_link_below(path.parents[3], path)  # <workdir>/cache/synth/<label>/journal.jsonl: never through a link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            for line in read_text_nofollow(path, errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill mid-write: that request is asked again
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("text"), str):
                    self.entries[entry["key"]] = entry
        self._file = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644), "a",
                               encoding="utf-8")  # closed by close()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.entries[entry["key"]] = entry

    def close(self) -> None:
        self._file.close()


@dataclass
class Usage:
    """Tokens and requests of one run, journaled ones included (``sent``: asked of the teacher in this run)."""

    budget: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0
    sent: int = 0
    cached: int = 0
    stopped: bool = False  # the budget was reached: requests not yet started were not sent
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def exhausted(self) -> bool:
        return self.budget is not None and self.tokens >= self.budget

    def add(self, entry: dict[str, Any], cached: bool) -> None:
        with self._lock:
            self.tokens_in += int(entry.get("prompt_tokens") or 0)
            self.tokens_out += int(entry.get("completion_tokens") or 0)
            self.requests += 1
            self.cached += cached
            self.sent += not cached


class EndpointTeacher:
    """An OpenAI-compatible endpoint, its pool sized for ``concurrency`` requests at once."""

    def __init__(self, endpoint: Any, concurrency: int, label: str) -> None:
        from dataclasses import replace

        if endpoint.api_key:
            endpoint.api_key.resolve()  # an unset variable is named now, not as a failed call
        self.endpoint = endpoint
        self.target = replace(Target.of(endpoint), pool=max(1, concurrency))
        self.ident = f"endpoint:{self.target.url}:{self.target.model}"
        self.label = label

    def ask(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        try:
            return chat(self.target, messages, max_tokens, temperature=0)
        except UpstreamError as e:  # summarised: never the upstream's body unredacted, never the key
            raise DslError(f"{self.label}: the teacher {self.endpoint.url} (model {self.endpoint.model}) failed after "
                           f"{e.attempts} attempt{'s' if e.attempts > 1 else ''}: {e}") from None


class ModelTeacher:
    """A model step of the recipe (teacher, or a preference task's student), as its kind's opener opened it from
    its artifact (:func:`sdk.systems.open_system`); one request at a time. A model system with a ``local`` model
    (the built-in kinds) is prompted through its chat template and its tokens counted; another (a plugin's) is
    asked as the eval asks it."""

    def __init__(self, system: Any, ident: str) -> None:
        self.system = system
        self.local = getattr(system, "local", None)
        self.ident = ident
        self._lock = threading.Lock()

    def ask(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        content = "\n\n".join(m["content"] for m in messages)
        with self._lock:
            if self.local is None:
                return {"text": Asker(self.system).ask(content, max_tokens), "prompt_tokens": 0, "completion_tokens": 0}
            prompt = self.local.generation_prompt(content)
            text = self.local.generate_many([prompt], max_tokens, 1, first_line=False)[0]
            return {"text": text, "prompt_tokens": len(self.local.encode(prompt)),
                    "completion_tokens": len(self.local.encode(text)) if text else 0}


def request_key(teacher: Any, messages: list[dict[str, str]], max_tokens: int) -> str:
    return digest({"teacher": teacher.ident, "messages": messages, "max_tokens": max_tokens})


def ask_all(teacher: Any, requests: list[list[dict[str, str]]], *, max_tokens: int, journal: Journal, usage: Usage,
            concurrency: int, advance: Callable[[], None] = lambda: None) -> list[str | None]:
    """The teacher's reply to each request (None where the budget stopped it first), ``concurrency`` at a time.
    Journaled requests are answered from the journal; a teacher failure stops new requests, lets those in flight
    finish (and be journaled), then is raised."""
    out: list[str | None] = [None] * len(requests)
    failure: list[BaseException] = []

    def one(i: int) -> None:
        key = request_key(teacher, requests[i], max_tokens)
        entry = journal.get(key)
        if entry is not None:
            usage.add(entry, cached=True)
        else:
            if failure or usage.exhausted():
                usage.stopped = usage.stopped or usage.exhausted()
                return
            try:
                reply = teacher.ask(requests[i], max_tokens)
            except BaseException as e:  # noqa: BLE001 - kept, raised once the requests in flight are journaled
                failure.append(e)
                return
            entry = {"key": key, "text": reply["text"], "prompt_tokens": reply.get("prompt_tokens", 0),
                     "completion_tokens": reply.get("completion_tokens", 0)}
            journal.record(entry)
            usage.add(entry, cached=False)
        out[i] = entry["text"]
        advance()

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="synth") as pool:
        list(pool.map(one, range(len(requests))))
    if failure:
        raise failure[0]
    return out
