"""The embedded engine: a transformers model behind a queue, batching concurrent requests on the CPU. A request
whose client left (its ``cancel`` event is set) is dropped from the queue, or stops generating at the next token
of the batch it runs in."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from sdk.records.serve import default


class Cancelled(Exception):
    """The request was cancelled (its client disconnected, or its wait timed out) before it finished."""


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    tokens: Optional["queue.Queue[int]"] = None  # streaming: each new token id as the batch makes it


class LocalEngine:
    """Generates for chat messages; a worker thread takes up to ``max_batch_size`` queued requests at a time
    and runs them as one left-padded batch.

    Counters: ``batches``, ``requests`` (generated), ``tokens`` (new tokens generated, all requests), ``dropped``
    (cancelled while queued: never generated), ``stopped`` (cancelled while generating: stopped at the next token)
    and ``tokens_after_cancel`` (tokens generated for a request after its cancellation, at most one per stopped
    request)."""

    def __init__(self, handle: Any, max_batch_size: int = default("max_batch_size"), name: str = "") -> None:
        from sdk.backends.models import load

        self.name = name
        self.model, self.tokenizer = load(handle, merge=bool(handle.adapter))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.max_batch_size = max_batch_size
        self.queue: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self.batches = self.requests = self.tokens = 0
        self.dropped = self.stopped = self.tokens_after_cancel = 0
        self.busy = False
        self.last_batch, self.last_seconds = 1, 0.0
        self.worker = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self.worker.start()

    def prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:  # our sandbox and budgets, not transformers' (the template is shared data)
            from sdk.templating import tokenizer_chat

            return tokenizer_chat(self.tokenizer, messages, where=f"the chat template of model {self.name!r}")
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def submit(self, prompt: str, max_tokens: int, cancel: Optional[threading.Event] = None,
               tokens: Optional["queue.Queue[int]"] = None) -> Future:
        from sdk.limits import fit

        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        req = _Request(fit(ids, self.max_len, max_tokens), max_tokens, cancel if cancel is not None else threading.Event(), tokens=tokens)
        self.queue.put(req)
        return req.future

    def stream(self, messages: list[dict[str, str]], max_tokens: int, timeout: Optional[float] = None,
               cancel: Optional[threading.Event] = None) -> Iterator[str]:
        """The answer as text pieces, each as soon as the batch has made its tokens (decoded incrementally: a
        character split over tokens, and trailing spaces, wait for what follows); the pieces join to
        :meth:`generate`'s text. Closing the iterator early, or a wait past ``timeout``, cancels the request."""
        import time

        cancel = cancel if cancel is not None else threading.Event()
        tokens: "queue.Queue[int]" = queue.Queue()
        future = self.submit(self.prompt(messages), max_tokens, cancel, tokens)
        deadline = time.monotonic() + timeout if timeout else None
        ids: list[int] = []
        sent, held = "", 0
        try:
            while True:
                try:
                    token = tokens.get(timeout=0.05)
                except queue.Empty:
                    if future.done() and tokens.empty():
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError("the local engine timed out") from None
                    continue
                if token == self.tokenizer.eos_token_id:
                    continue
                ids.append(token)
                held += 1
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                if text.endswith("\ufffd") and held < 4:  # a character's first bytes (UTF-8 has at most 4)
                    continue
                if text.startswith(sent) and len(text) > len(sent):
                    yield text[len(sent):]
                    sent, held = text, 0
            final = future.result()[0]  # raises Cancelled or the engine's error
            if final.startswith(sent) and len(final) > len(sent):
                yield final[len(sent):]
        finally:
            if not future.done():
                cancel.set()

    def generate(self, messages: list[dict[str, str]], max_tokens: int, timeout: Optional[float] = None,
                 cancel: Optional[threading.Event] = None) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens). Setting ``cancel`` drops or stops the request (it then
        raises :class:`Cancelled`); so does a wait past ``timeout`` (it then raises ``TimeoutError``)."""
        cancel = cancel if cancel is not None else threading.Event()
        future = self.submit(self.prompt(messages), max_tokens, cancel)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            cancel.set()  # nobody waits for it any more: do not generate it
            raise

    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return self.queue.empty() and not self.busy

    def _take(self) -> Optional[list[_Request]]:
        """The next batch of live requests (cancelled ones are dropped), or None when closed."""
        batch: list[_Request] = []
        while not batch:
            first = self.queue.get()
            if first is None:
                return None
            self.busy = True
            if first.cancel.is_set():
                self._drop(first)
                self.busy = False
                continue
            batch.append(first)
        # wait briefly for more: up to 5 ms; while fewer than the previous batch have come, up to a tenth of the
        # previous batch's time (at most 200 ms): clients answered together send their next requests together
        import time

        started = time.monotonic()
        patience = max(0.005, min(0.2, 0.1 * self.last_seconds))
        while len(batch) < self.max_batch_size:
            wait = (patience if len(batch) < self.last_batch else 0.005) - (time.monotonic() - started)
            try:
                nxt = self.queue.get(timeout=max(wait, 0.0005))
            except queue.Empty:
                break
            if nxt is None:
                self.queue.put(None)
                break
            if nxt.cancel.is_set():
                self._drop(nxt)
            else:
                batch.append(nxt)
        return batch

    def _drop(self, r: _Request) -> None:
        self.dropped += 1
        r.future.set_exception(Cancelled("cancelled before generation"))

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
            finally:
                self.busy = False

    def _run(self, batch: list[_Request]) -> None:
        import time

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        width = max(len(r.prompt_ids) for r in batch)
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch])
        done = [False] * len(batch)
        cancelled = [False] * len(batch)
        engine = self

        class PerRow(StoppingCriteria):
            """Stops each row at its own max_tokens, at EOS, or when its client left (checked every token)."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                made = input_ids.shape[1] - width
                for i, r in enumerate(batch):
                    if done[i]:
                        continue
                    engine.tokens += 1
                    if r.tokens is not None:
                        r.tokens.put(int(input_ids[i, -1]))
                    if r.cancel.is_set():
                        done[i] = cancelled[i] = True
                        engine.tokens_after_cancel += 1
                        engine.stopped += 1
                    elif made >= r.max_tokens or int(input_ids[i, -1]) == eos:
                        done[i] = True
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        started = time.monotonic()
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                                      max_new_tokens=max(r.max_tokens for r in batch),
                                      stopping_criteria=StoppingCriteriaList([PerRow()]))
        self.batches += 1
        self.requests += len(batch)
        self.last_batch, self.last_seconds = len(batch), time.monotonic() - started
        for i, r in enumerate(batch):
            if cancelled[i]:
                r.future.set_exception(Cancelled("cancelled during generation"))
                continue
            new = out[i][width:width + r.max_tokens].tolist()
            if eos in new:
                new = new[: new.index(eos)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            r.future.set_result((text.strip(), len(r.prompt_ids), len(new)))

    def close(self) -> None:
        self.queue.put(None)
