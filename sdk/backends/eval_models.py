"""What an eval asks: a local causal LM (generation and log-likelihood scoring, as lm-evaluation-harness does), an
OpenAI-compatible endpoint (retried with backoff) and an LLM judge."""

from __future__ import annotations

import time
from typing import Any

from sdk.artifacts import Artifact
from sdk.errors import DslError
from sdk.evalsets import EvalItem

RAW_PROMPT = "Question: {question}\nAnswer:"
CONTEXT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"


class LocalModel:
    """A causal LM for generation and log-likelihood scoring."""

    def __init__(self, handle: Any = None, *, model: Any = None, tokenizer: Any = None) -> None:
        if handle is not None:
            from sdk.backends.models import load

            model, tokenizer = load(handle, merge=bool(handle.adapter))
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def loglik(self, context: str, continuation: str) -> float:
        """Sum of log p(continuation | context), tokenised as lm-eval does (whole string, then split)."""
        return self.logliks(context, [continuation])[0]

    def _pair(self, context: str, continuation: str) -> tuple[list[int], int]:
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        cont = whole[len(ctx):] or self.encode(continuation)  # lm-eval's split, even when tokens merge at the seam
        ids = (ctx + cont)[-self.max_len:]  # a too long prompt loses its start, as in lm-eval
        return ids, min(len(cont), len(ids) - 1)

    def logliks(self, context: str, continuations: list[str]) -> list[float]:
        """Log-likelihood of each continuation after the same context, in one right-padded batch."""
        return [lp for lp, _ in self._scored(context, continuations)]

    def answer_nll(self, prompt: str, answer: str) -> tuple[float, int]:
        """(negative log-likelihood, tokens) of ``answer`` right after ``prompt``: what the model would have to
        write. A space goes between them unless the prompt ends in whitespace (a chat template's turn marker)."""
        sep = "" if not prompt or prompt[-1].isspace() else " "
        lp, n = self._scored(prompt, [sep + answer])[0]
        return -lp, n

    def _scored(self, context: str, continuations: list[str]) -> list[tuple[float, int]]:
        import torch

        pairs = [self._pair(context, c) for c in continuations]
        width = max(len(ids) for ids, _ in pairs)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in pairs])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in pairs])
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(input_ids=batch, attention_mask=mask).logits.float(), dim=-1)
        out = []
        for row, (ids, n) in enumerate(pairs):
            positions = torch.arange(len(ids) - n - 1, len(ids) - 1)
            targets = torch.tensor(ids[len(ids) - n:])
            out.append((float(logprobs[row, positions, targets].sum()), n))
        return out

    def chat(self, content: str) -> str:
        """``content`` as one user turn in the tokenizer's chat template, ready for the assistant's reply."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)

    def generation_prompt(self, question: str, prompt: str | None = None) -> str:
        """What generation starts from: ``prompt`` if given, else the question in the chat template, else
        ``Question: ...\nAnswer:``."""
        if prompt is not None:
            return prompt
        return self.chat(question) if self.tokenizer.chat_template else RAW_PROMPT.format(question=question)

    def generate(self, question: str, max_new_tokens: int, prompt: str | None = None) -> str:
        import torch

        prompt = self.generation_prompt(question, prompt)
        ids = self.encode(prompt)[-(self.max_len - max_new_tokens):]
        with torch.no_grad():
            out = self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        text = self.tokenizer.decode(out[0][len(ids):], skip_special_tokens=True)
        return text.strip().split("\n")[0].strip()


class EndpointModel:
    """An OpenAI-compatible endpoint, retried with backoff."""

    def __init__(self, endpoint: Any) -> None:
        from openai import OpenAI

        key = endpoint.api_key.resolve() if endpoint.api_key else "unused"
        self.endpoint = endpoint
        self.client = OpenAI(base_url=endpoint.url, api_key=key, timeout=endpoint.timeout, max_retries=0)

    def ask(self, text: str, max_tokens: int) -> str:
        delay, last = 0.5, None
        for _ in range(self.endpoint.max_retries + 1):
            try:
                reply = self.client.chat.completions.create(model=self.endpoint.model, max_tokens=max_tokens,
                                                            messages=[{"role": "user", "content": text}], temperature=0)
                return reply.choices[0].message.content or ""
            except Exception as e:  # noqa: BLE001 - retried, then reported
                last = e
                time.sleep(delay)
                delay *= 2
        raise DslError(f"endpoint {self.endpoint.url} (model {self.endpoint.model}) failed after "
                       f"{self.endpoint.max_retries + 1} attempts: {type(last).__name__}: {last}")


def _local(artifacts: dict[str, Artifact], step_id: str, spec: Any = None) -> LocalModel:
    from sdk.backends.models import handle, recipe_trusts

    art = artifacts.get(step_id)
    if art is None:
        raise DslError(f"{step_id} has no finished artifact")
    return LocalModel(handle(art, trust_remote_code=spec is not None and recipe_trusts(spec, step_id)))


JUDGE_PROMPT = """You grade answers to expert questions.
Rubric:
{rubric}

Question: {question}
Reference answer: {reference}
Answer to grade: {prediction}

Reply with one score from 1 (wrong) to 5 (fully correct), then a short reason."""

DEFAULT_RUBRIC = "5: correct and complete; 3: partly correct; 1: wrong, unsupported or no answer."


class Judge:
    """An LLM judge through any OpenAI-compatible endpoint; scores 1..5 map to 0..1."""

    def __init__(self, endpoint: Any, rubric: str) -> None:
        self.model = EndpointModel(endpoint)
        self.rubric = rubric

    def score(self, item: EvalItem, prediction: str) -> float | None:
        import re

        reply = self.model.ask(JUDGE_PROMPT.format(rubric=self.rubric, question=item.question,
                                                   reference=" | ".join(item.answers) or item.gold,
                                                   prediction=prediction or "(no answer)"), 64)
        m = re.search(r"\b([1-5])\b", reply)
        return (int(m.group(1)) - 1) / 4 if m else None
