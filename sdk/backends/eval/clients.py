"""What an eval asks: a local causal LM (generation and log-likelihood scoring, as lm-evaluation-harness does), an
OpenAI-compatible endpoint (retried with backoff by the openai client) and an LLM judge."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sdk.artifacts import Artifact
from sdk.backends.models import handle, load, recipe_trusts
from sdk.errors import DslError
from sdk.evalsets import EvalItem
from sdk.limits import fit
from sdk.templating import tokenizer_chat
from sdk.upstream import Target, UpstreamError, chat

RAW_PROMPT = "Question: {question}\nAnswer:"
CONTEXT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"


class LocalModel:
    """A causal LM for generation and log-likelihood scoring, one item at a time or a batch of items at once
    (sorted by length so that a batch pads little; greedy answers and scores equal those of one item alone)."""

    max_tokens = 8192  # most padded tokens (rows x width) one batched forward pass or generate call may hold

    def __init__(self, handle: Any = None, *, model: Any = None, tokenizer: Any = None) -> None:
        if handle is not None:
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
        return self.scored_many([context], [continuations], 1)[0]

    def scored_many(self, contexts: Sequence[str], options: Sequence[Sequence[str]], batch: int = 16) -> list[list[float]]:
        """Log-likelihood of each option after its context (``options[i]`` belongs to ``contexts[i]``), the
        (context, option) rows sorted by length and scored ``batch`` contexts' worth of rows per forward pass."""
        if len(options) != len(contexts) or any(isinstance(o, str) for o in options):
            raise TypeError("scored_many needs one list of options per context")
        pairs = [(c, o) for c, opts in zip(contexts, options) for o in opts]
        flat = iter(self._scored(pairs, batch * max((len(o) for o in options), default=1)))
        return [[next(flat)[0] for _ in opts] for opts in options]

    def answer_nll(self, prompt: str, answer: str) -> tuple[float, int]:
        """(negative log-likelihood, tokens) of ``answer`` right after ``prompt``: what the model would have to
        write. A space goes between them unless the prompt ends in whitespace (a chat template's turn marker)."""
        return self.answer_nlls([prompt], [answer], 1)[0]

    def answer_nlls(self, prompts: Sequence[str], answers: Sequence[str], batch: int = 16) -> list[tuple[float, int]]:
        """:meth:`answer_nll` of each (prompt, answer), ``batch`` of them per forward pass."""
        pairs = [(p, ("" if not p or p[-1].isspace() else " ") + a) for p, a in zip(prompts, answers)]
        return [(-lp, n) for lp, n in self._scored(pairs, batch)]

    def _batches(self, lengths: list[int], rows: int, extra: int = 0) -> Iterator[list[int]]:
        """Indexes sorted by length, cut into batches of at most ``rows`` rows whose padded size (rows x (longest
        + ``extra``)) stays within ``max_tokens`` (one row at least)."""
        chunk: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            if chunk and (len(chunk) >= rows or (len(chunk) + 1) * (lengths[i] + extra) > self.max_tokens):
                yield chunk
                chunk = []
            chunk.append(i)
        if chunk:
            yield chunk

    def _scored(self, pairs: list[tuple[str, str]], rows: int) -> list[tuple[float, int]]:
        """(sum log-probability, tokens) of each (context, continuation), right-padded batches of ``rows`` rows;
        only the positions a continuation needs get logits (``logits_to_keep`` where the model takes it)."""
        import inspect

        import torch

        enc = [self._pair(c, o) for c, o in pairs]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        pad = self.tokenizer.pad_token_id or 0
        keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        for chunk in self._batches([len(ids) for ids, _ in enc], max(1, rows)):
            width = max(len(enc[i][0]) for i in chunk)
            batch = torch.tensor([enc[i][0] + [pad] * (width - len(enc[i][0])) for i in chunk])
            mask = torch.tensor([[1] * len(enc[i][0]) + [0] * (width - len(enc[i][0])) for i in chunk])
            first = min(len(enc[i][0]) - enc[i][1] - 1 for i in chunk)  # the first position whose logits count
            with torch.no_grad():
                logits = self.model(input_ids=batch.to(self.model.device), attention_mask=mask.to(self.model.device),
                                    **({"logits_to_keep": width - first} if keep else {})).logits
            offset = width - logits.shape[1]
            for row, i in enumerate(chunk):
                ids, n = enc[i]
                positions = torch.arange(len(ids) - n - 1, len(ids) - 1) - offset
                logprobs = torch.log_softmax(logits[row, positions].float(), dim=-1)
                out[i] = (float(logprobs[torch.arange(n), torch.tensor(ids[len(ids) - n:])].sum()), n)
        return out

    def chat(self, content: str) -> str:
        """``content`` as one user turn in the tokenizer's chat template, ready for the assistant's reply."""
        return tokenizer_chat(self.tokenizer, [{"role": "user", "content": content}])  # our sandbox and budgets

    def generation_prompt(self, question: str, prompt: str | None = None) -> str:
        """What generation starts from: ``prompt`` if given, else the question in the chat template, else
        ``Question: ...\nAnswer:``."""
        if prompt is not None:
            return prompt
        return self.chat(question) if self.tokenizer.chat_template else RAW_PROMPT.format(question=question)

    def generate(self, question: str, max_new_tokens: int, prompt: str | None = None) -> str:
        return self.generate_many([self.generation_prompt(question, prompt)], max_new_tokens, 1)[0]

    def generate_many(self, prompts: Sequence[str], max_new_tokens: int, batch: int = 16,
                      first_line: bool = True) -> list[str]:
        """Greedy answers (stripped; their first line only, as an eval scores it, unless ``first_line`` is false: a
        synth teacher's reasoned answer spans lines) to ``prompts``: sorted by length, left-padded, one ``generate``
        call per batch of at most ``batch`` prompts; each answer equals the prompt's answer alone."""
        import torch

        enc = [fit(self.encode(p), self.max_len, max_new_tokens) for p in prompts]
        pad = self.tokenizer.pad_token_id or 0
        out = [""] * len(enc)
        for chunk in self._batches([len(ids) for ids in enc], max(1, batch), max_new_tokens):
            width = max(len(enc[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(enc[i])) + enc[i] for i in chunk])
            mask = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in chunk])
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                          max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            for row, i in enumerate(chunk):
                text = self.tokenizer.decode(gen[row][width:], skip_special_tokens=True)
                out[i] = text.strip().split("\n")[0].strip() if first_line else text.strip()
        return out


class EndpointModel:
    """An OpenAI-compatible endpoint: each question one call under the endpoint's end-to-end deadline (its
    ``timeout``), retried with backoff within it, through the endpoint's own bounded pool (:mod:`sdk.upstream`)."""

    def __init__(self, endpoint: Any) -> None:
        if endpoint.api_key:
            endpoint.api_key.resolve()  # an unset variable is named now, not as a failed call
        self.endpoint = endpoint
        self.target = Target.of(endpoint)

    def ask(self, text: str, max_tokens: int) -> str:
        try:
            return chat(self.target, [{"role": "user", "content": text}], max_tokens, temperature=0)["text"]
        except UpstreamError as e:  # summarised: never the upstream's body unredacted, never the key
            raise DslError(f"endpoint {self.endpoint.url} (model {self.endpoint.model}) failed after {e.attempts} "
                           f"attempt{'s' if e.attempts > 1 else ''}: {e}") from None


def local_model(artifacts: dict[str, Artifact], step_id: str, spec: Any = None) -> LocalModel:
    art = artifacts.get(step_id)
    if art is None:
        raise DslError(f"{step_id} has no finished artifact")
    return LocalModel(handle(art, trust_remote_code=spec is not None and recipe_trusts(spec, step_id)))


class ModelSystem:
    """A local model (adapter merged) asked as a system: ``answer(question)`` (no sources); ``local`` is its
    :class:`LocalModel` (log-likelihoods, batched generation) for those that score it."""

    def __init__(self, local: LocalModel, step_id: str) -> None:
        self.local = local
        self.step_id = step_id

    def answer(self, question: str, max_new_tokens: int = 64) -> dict[str, Any]:
        return {"answer": self.local.generate(question, max_new_tokens), "sources": [], "cited": []}


def open_model(art: Artifact, spec: Any = None, **_: Any) -> ModelSystem:
    """The model kinds' opener (``opener`` of base_model, pretrain, finetune, align, reward; see
    :func:`sdk.systems.open_system`): opened from its applied artifact alone, the recipe (``spec``) read only for
    its trust_remote_code."""
    return ModelSystem(local_model({art.step_id: art}, art.step_id, spec), art.step_id)


JUDGE_PROMPT = """You grade answers to expert questions.
Rubric:
{rubric}

Question: {question}
Reference answer: {reference}
Answer to grade: {prediction}

Reply with one score from 1 (wrong) to 5 (fully correct), then a short reason."""

DEFAULT_RUBRIC = "5: correct and complete; 3: partly correct; 1: wrong, unsupported or no answer."
_SCORE = re.compile(r"\b([1-5])\b")


def judge_score(reply: str | None) -> float | None:
    """A judge's 1-5 score (the first one its reply holds) mapped to 0-1, or None when it holds none."""
    m = _SCORE.search(reply or "")
    return (int(m.group(1)) - 1) / 4 if m else None


class Judge:
    """An LLM judge through any OpenAI-compatible endpoint; scores 1..5 map to 0..1."""

    def __init__(self, endpoint: Any, rubric: str) -> None:
        self.model = EndpointModel(endpoint)
        self.rubric = rubric

    def score(self, item: EvalItem, prediction: str) -> float | None:
        return judge_score(self.model.ask(JUDGE_PROMPT.format(rubric=self.rubric, question=item.question,
                                                              reference=" | ".join(item.answers) or item.gold,
                                                              prediction=prediction or "(no answer)"), 64))
