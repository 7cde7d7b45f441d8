"""The embedded engine: a transformers model behind a queue, batching concurrent requests on the CPU."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    future: Future = field(default_factory=Future)


class LocalEngine:
    """Generates for chat messages; a worker thread takes up to ``max_batch_size`` queued requests at a time
    and runs them as one left-padded batch."""

    def __init__(self, handle: Any, max_batch_size: int = 8, name: str = "") -> None:
        from sdk.backends.models import load

        self.name = name
        self.model, self.tokenizer = load(handle, merge=bool(handle.adapter))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.max_batch_size = max_batch_size
        self.queue: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self.batches = 0
        self.requests = 0
        self.worker = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self.worker.start()

    def prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def submit(self, prompt: str, max_tokens: int) -> Future:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        keep = max(1, self.max_len - max_tokens)
        req = _Request(ids[-keep:], max_tokens)
        self.queue.put(req)
        return req.future

    def generate(self, messages: list[dict[str, str]], max_tokens: int, timeout: Optional[float] = None) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens)."""
        prompt = self.prompt(messages)
        return self.submit(prompt, max_tokens).result(timeout=timeout)

    def _loop(self) -> None:
        import torch

        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self.queue.get(timeout=0.005)
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            try:
                width = max(len(r.prompt_ids) for r in batch)
                pad = self.tokenizer.pad_token_id
                ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch])
                mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch])
                with torch.no_grad():
                    out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                              max_new_tokens=max(r.max_tokens for r in batch), pad_token_id=pad)
                self.batches += 1
                self.requests += len(batch)
                for i, r in enumerate(batch):
                    new = out[i][width:width + r.max_tokens].tolist()
                    eos = self.tokenizer.eos_token_id
                    if eos in new:
                        new = new[: new.index(eos)]
                    text = self.tokenizer.decode(new, skip_special_tokens=True)
                    r.future.set_result((text.strip(), len(r.prompt_ids), len(new)))
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)

    def close(self) -> None:
        self.queue.put(None)
