"""The ``eval`` step: every system of the block answers the same items; each metric gets a bootstrap confidence
interval and each difference from the first system a paired-bootstrap p-value; the gate decides promotion.

Scoring:
- generation (answer strings): exact match and token F1 against the answer and its aliases;
- multiple choice and classification: local models by the log-likelihood of each option after
  ``Question: ...\\nAnswer:`` (the lm-evaluation-harness convention); endpoints by parsing the chosen option;
- rag systems: their answer, citations against the item's ``sources``, retrieval recall@k and MRR; for choices and
  labels, the rag's local generator scores the options with the retrieved chunks in the prompt;
- perplexity: of the reference answer right after the prompt the system answers from (a rag system's own prompt,
  retrieved chunks included), so a model alone and the same model behind retrieval compare on the same tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk import expr as E
from sdk import metrics as M
from sdk.backends.base import Artifact, Backend, CheckContext, GateFailed, StepContext, StepResult
from sdk.errors import DataError, DslError
from sdk.evalsets import EvalItem, contamination, load_items
from sdk.spec.blocks.eval import training_steps

RAW_PROMPT = "Question: {question}\nAnswer:"
CONTEXT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"


def system_id(system: Any) -> str:
    return f"endpoint:{system.model}" if hasattr(system, "url") else str(system)


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


def task_of(block: Any, items: list[EvalItem]) -> str:
    if block.task != "auto":
        return str(block.task)
    if all(it.choices for it in items):
        return "multiple_choice"
    if all(it.label is not None for it in items):
        return "classification"
    return "generate"


@dataclass
class Answer:
    prediction: str
    sources: list[str]
    retrieved: list[str]
    nll: tuple[float, int] | None = None


def _prompt_with(question: str, item: EvalItem, task: str, options: list[str] | None = None) -> str:
    """What an endpoint (or a rag system's generator) is asked: the options numbered, and how to answer."""
    if task == "multiple_choice" and options:
        opts = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(options))
        return f"{question}\nOptions:\n{opts}\nAnswer with the number of the right option."
    if task == "classification" and options:
        return f"{question}\nAnswer with one of: {', '.join(options)}."
    return question


class Prompter:
    """The text a local model scores options after: ``Question: {question}\nAnswer:`` (lm-eval's convention) or
    the block's Jinja2 ``prompt`` (variables: question, choices, context)."""

    def __init__(self, template: str | None) -> None:
        self.template = None
        if template:
            from jinja2 import Environment, StrictUndefined

            self.template = Environment(undefined=StrictUndefined, autoescape=False).from_string(template)

    def __call__(self, item: EvalItem, context: str | None = None) -> str:
        if self.template is not None:
            return self.template.render(question=item.question, choices=item.choices or [], context=context or "")
        if context:
            return CONTEXT_PROMPT.format(context=context, question=item.question)  # too long: cut at the left
        return RAW_PROMPT.format(question=item.question)


def _source_key(source: Any) -> str:
    """Sources compare by file stem, so that gold ``sip`` or ``docs/sip.md`` matches a chunk from ``/x/docs/sip.md``."""
    text = str(source or "")
    return Path(text).stem if text else text


class SystemRunner:
    """Answers items for one system (a model step, a rag step or an endpoint)."""

    def __init__(self, spec: Any, system: Any, artifacts: dict[str, Artifact], labels: list[str], task: str,
                 prompter: Prompter) -> None:
        from sdk.spec import Endpoint

        self.spec, self.system, self.labels, self.task, self.prompter = spec, system, labels, task, prompter
        self.local: LocalModel | None = None
        self.endpoint: EndpointModel | None = None
        self.rag: Any = None
        self.reader: LocalModel | None = None  # a rag system's local generator, when answers are generated
        if isinstance(system, Endpoint):
            self.endpoint = EndpointModel(system)
        elif system.kind == "rag":
            from sdk.backends.rag import LocalChatGenerator, RagSystem
            from sdk.systems import applied_block, input_artifact

            rag_art = artifacts[str(system)]
            gen = applied_block(rag_art).generator
            scored = task in ("multiple_choice", "classification") and gen is not None and not isinstance(gen, Endpoint)
            # options are scored by the generator's log-likelihood with the retrieved chunks in the prompt;
            # free answers come from the rag system itself (its prompt, its generator, its citations)
            self.rag = RagSystem.open(rag_art, with_generator=not scored, base_dir=spec.base_dir)
            if scored:
                gen_art = input_artifact(rag_art, str(gen))
                self.local = _local({str(gen): gen_art}, str(gen), spec)
            elif isinstance(self.rag.generator, LocalChatGenerator):  # its own weights, for answer perplexity
                pipe = self.rag.generator.component.pipeline
                self.reader = LocalModel(model=pipe.model, tokenizer=pipe.tokenizer)
        else:
            self.local = _local(artifacts, str(system), spec)

    def answer(self, item: EvalItem, max_new_tokens: int, want_nll: bool) -> Answer:
        """The system's answer to one item; with ``want_nll``, also the negative log-likelihood of the reference
        answer after the very prompt the system answered from (for a rag system: with its retrieved chunks)."""
        task = self.task
        options = item.choices if task == "multiple_choice" else (self.labels if task == "classification" else None)
        context, sources, retrieved, read_prompt = None, [], [], None
        if self.rag is not None and (self.local is not None or options):
            docs = self.rag.retrieve(item.question)
            retrieved = [str(d["meta"].get("source") or d["id"]) for d in docs]
            context = "\n".join(d["content"] for d in docs)
            sources = list(dict.fromkeys(retrieved))
        if options:
            if self.local is not None:
                prompt = self.prompter(item, context)
                scores = self.local.logliks(prompt, [" " + o for o in options])
                pred = options[max(range(len(options)), key=lambda i: scores[i])]
            else:
                question = _prompt_with(item.question, item, task, options)
                text = self.rag.answer(question, max_new_tokens=16)["answer"] if self.rag is not None \
                    else self.endpoint.ask(question, 16)  # type: ignore[union-attr]
                idx = M.parse_choice(text, options)
                pred = options[idx] if idx is not None else text.strip()
        elif self.rag is not None:
            out = self.rag.answer(item.question, max_new_tokens=max_new_tokens)
            if self.reader is not None:
                read_prompt = self.reader.chat(out["prompt"])
            pred = (out["answer"] or "").strip().split("\n")[0].strip()
            retrieved = [str(s.get("source") or s["id"]) for s in out["sources"]]
            cited = [retrieved[i - 1] for i in out.get("cited", []) if 0 < i <= len(retrieved)]
            sources = list(dict.fromkeys(cited or retrieved))
        elif self.local is not None:
            pred = self.local.generate(item.question, max_new_tokens,
                                       prompt=self.prompter(item) if self.prompter.template else None)
        else:
            pred = self.endpoint.ask(item.question, max_new_tokens).strip()  # type: ignore[union-attr]
        nll = None
        reference = item.answers[0] if item.answers else item.label
        if want_nll and reference:
            if self.local is not None:
                prompt = self.prompter(item, context) if options else \
                    self.local.generation_prompt(item.question, self.prompter(item) if self.prompter.template else None)
                nll = self.local.answer_nll(prompt, reference)
            elif self.reader is not None and read_prompt is not None:
                nll = self.reader.answer_nll(read_prompt, reference)
        return Answer(pred, sources, retrieved, nll)


def _local(artifacts: dict[str, Artifact], step_id: str, spec: Any = None) -> LocalModel:
    from sdk.backends.models import handle, recipe_trusts

    art = artifacts.get(step_id)
    if art is None:
        raise DslError(f"{step_id} has no finished artifact")
    return LocalModel(handle(art, trust_remote_code=spec is not None and recipe_trusts(spec, step_id)))


def score_item(item: EvalItem, ans: Answer, task: str, metrics: list[str], k: int,
               judged: float | None = None) -> dict[str, float | None]:
    """Per-item scores (None: the metric does not apply to this item or system)."""
    out: dict[str, float | None] = {}
    gold = item.gold
    answers = item.answers or [gold]
    cited = [_source_key(s) for s in ans.sources]
    retrieved = [_source_key(s) for s in ans.retrieved]
    expected = [_source_key(s) for s in item.sources]
    for m in metrics:
        if m == "exact_match":
            out[m] = M.exact_match(ans.prediction, answers)
        elif m == "f1":
            out[m] = M.token_f1(ans.prediction, answers)
        elif m == "accuracy":
            out[m] = float(M.normalize(ans.prediction) == M.normalize(gold)) if task != "generate" \
                else M.exact_match(ans.prediction, answers)
        elif m == "citation_precision":
            out[m] = M.citation_precision(cited, expected) if ans.retrieved and expected else None
        elif m == "citation_recall":
            out[m] = M.citation_recall(cited, expected) if ans.retrieved else None
        elif m == "recall_at_k":
            out[m] = M.recall_at_k(retrieved, expected, k) if ans.retrieved else None
        elif m == "mrr":
            out[m] = M.reciprocal_rank(retrieved, expected) if ans.retrieved else None
        elif m == "judge":
            out[m] = judged
    return out


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


def _text(spec: Any, value: Any) -> str | None:
    from sdk.spec import FileRef

    if value is None:
        return None
    return value.read(spec.base_dir) if isinstance(value, FileRef) else str(value)


class EvalBackend(Backend):
    name = "builtin"
    version = "2"  # 2: perplexity of the answer after each system's own prompt
    kinds = ("eval",)
    requires = ("torch", "transformers")
    install_hint = "pip install 'domain-dsl[all]'"

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

        block: Any = ctx.block
        path = ctx.spec.resolve_path(block.data)
        if not path.is_file() or path.suffix == ".zip" or block.password is not None:
            return []
        try:
            load_items(path, block, block.data, limit=None)
        except DataError as e:
            return [Problem(path=ctx.path + ("data",), message=str(e))]
        return []

    def run(self, ctx: StepContext) -> StepResult:
        from sdk.report import write_report

        block: Any = ctx.block
        path = ctx.spec.resolve_path(block.data)
        items = load_items(path, block, block.data, limit=block.limit)
        task = task_of(block, items)
        if task == "multiple_choice" and not all(it.choices for it in items):
            bad = next(it for it in items if not it.choices)
            raise DataError(block.data, bad.line, f"item {bad.id} has no choices but the task is multiple_choice")
        labels = sorted({it.label for it in items if it.label is not None})
        if task == "classification" and len(labels) < 2:
            raise DataError(block.data, None, f"classification needs at least two labels; found {labels or 'none'} "
                                              "(map the label column with fields = { label = \"...\" })")
        from sdk.systems import applied_block

        artifacts: dict[str, Artifact] = dict(ctx.inputs)
        k = max((applied_block(artifacts[str(s)]).top_k for s in block.systems if getattr(s, "kind", "") == "rag"),
                default=5)
        want_nll = "perplexity" in block.metrics
        prompter = Prompter(_text(ctx.spec, block.prompt))
        judge = Judge(block.judge, _text(ctx.spec, block.rubric) or DEFAULT_RUBRIC) \
            if "judge" in block.metrics and block.judge is not None else None
        rows: dict[str, list[dict[str, Any]]] = {}
        per_item: dict[str, list[dict[str, float | None]]] = {}
        nlls: dict[str, dict[str, tuple[float, int]]] = {}  # system -> item id -> (NLL, tokens) of its answer
        for system in block.systems:
            sid = system_id(system)
            done = _load_partial(ctx.checkpoint_dir, sid)
            runner: SystemRunner | None = None
            rows[sid], per_item[sid], nlls[sid] = [], [], {}
            if done:
                ctx.log(f"{ctx.step_id}: {sid}: resuming with {len(done)} saved answers")
            with ctx.progress.task(f"{ctx.step_id}: {sid}", total=len(items)) as bar:
                for item in items:
                    saved = done.get(item.id)
                    if saved is not None:
                        ans = Answer(saved["prediction"], saved["sources"], saved["retrieved"],
                                     tuple(saved["nll"]) if saved.get("nll") else None)  # type: ignore[arg-type]
                        judged = saved.get("judge")
                    else:
                        try:
                            if runner is None:
                                runner = SystemRunner(ctx.spec, system, artifacts, labels, task, prompter)
                            ans = runner.answer(item, block.max_new_tokens, want_nll)
                            judged = judge.score(item, ans.prediction) if judge is not None else None
                        except Exception as e:
                            if not isinstance(e, DslError) and not _remote(ctx.spec, system):
                                raise
                            raise DslError(f"{ctx.step_id}: {sid} stopped at item {item.id}: {e}; {len(done)} answers "
                                           f"are saved for {sid} in {ctx.checkpoint_dir} and the next apply "
                                           "resumes from them") from None
                        _save_partial(ctx.checkpoint_dir, sid, item.id, ans, judged)
                        done[item.id] = {}
                    scores = score_item(item, ans, task, list(block.metrics), k, judged)
                    if ans.nll:
                        nlls[sid][item.id] = ans.nll
                    per_item[sid].append(scores)
                    correct = next((scores[m] for m in ("accuracy", "exact_match") if scores.get(m) is not None),
                                   None)
                    rows[sid].append({"id": item.id, "system": sid, "question": item.question, "gold": item.gold,
                                      "prediction": ans.prediction, "correct": correct, "sources": ans.sources,
                                      "expected_sources": item.sources, "scores": scores})
                    bar.advance()
        results = aggregate(per_item, nlls, block)
        if "macro_f1" in block.metrics:
            add_macro_f1(results, rows, block)
        comparisons = compare(per_item, block, nlls)
        contam = self._contamination(ctx, items, block, artifacts)
        for system_rows in rows.values():
            for r in system_rows:
                r["contamination"] = contam["items"].get(r["id"], 0.0)
        metrics: dict[str, Any] = {**results, "n_items": len(items), "task": task,
                                   "contaminated_items": contam["contaminated"], "comparisons": comparisons}
        gate_text, gate_ok, gate_detail = None, True, ""
        if block.gate is not None:
            gate_text = E.to_text(block.gate)
            gate_ok, gate_detail = evaluate_gate(block.gate, results)
        summary = {"step": ctx.step_id, "task": task, "n_items": len(items), "systems": list(results),
                   "metrics": results, "comparisons": comparisons, "contamination": contam,
                   "bootstrap": block.bootstrap, "confidence": block.confidence, "seed": block.seed,
                   "gate": {"expression": gate_text, "passed": gate_ok, "detail": gate_detail} if gate_text else None}
        outputs = write_report(ctx.out_dir, summary, rows, artifacts, ctx.spec)
        result = StepResult(metrics=metrics, outputs=outputs,
                            summary=f"{len(items)} items x {len(results)} systems ({task})"
                                    + (f"; gate {'passed' if gate_ok else 'FAILED'}" if gate_text else ""))
        if block.fail_on_contamination and contam["contaminated"]:
            raise GateFailed(f"{ctx.step_id}: {contam['contaminated']} eval items overlap the training data "
                             f"({contam['contaminated']} of {len(items)} share {block.ngram}-grams with "
                             f"{', '.join(contam['steps'])}) and fail_on_contamination is set "
                             f"(items: {', '.join(list(contam['items'])[:10])})", result)
        if not gate_ok:
            raise GateFailed(f"{ctx.step_id}: gate {gate_text} failed: {gate_detail}", result)
        return result

    def _contamination(self, ctx: StepContext, items: list[EvalItem], block: Any,
                       artifacts: dict[str, Artifact]) -> dict[str, Any]:
        if not block.contamination:
            return {"checked": False, "contaminated": 0, "items": {}, "steps": []}
        steps = training_steps(ctx.spec, block.systems)
        texts: list[str] = []
        for step_id in steps:
            art = artifacts.get(step_id)
            if art is None:
                continue
            if step_id.startswith("corpus."):
                texts += [json.loads(x)["content"] for x in _lines(art.path / art.outputs.get("chunks", "chunks.jsonl"))]
            else:
                for x in _lines(art.path / art.outputs.get("train", "train.jsonl")):
                    row = json.loads(x)
                    texts.append(row.get("text") or " ".join(str(m.get("content", "")) for m in row.get("messages", [])))
        shares = contamination(items, texts, block.ngram)
        hit = {k: round(v, 3) for k, v in shares.items() if v > 0}
        return {"checked": True, "ngram": block.ngram, "contaminated": len(hit), "share": round(len(hit) / max(1, len(items)), 4),
                "items": hit, "steps": steps}


def _remote(spec: Any, system: Any) -> bool:
    from sdk.spec import Endpoint

    if isinstance(system, Endpoint):
        return True
    return getattr(system, "kind", "") == "rag" and isinstance(getattr(spec.rag.get(system.label), "generator", None),
                                                               Endpoint)


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()] if path.exists() else []


def aggregate(per_item: dict[str, list[dict[str, float | None]]], nlls: dict[str, dict[str, tuple[float, int]]],
              block: Any) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sid, scores in per_item.items():
        out[sid] = {}
        for m in block.metrics:
            if m == "macro_f1":
                continue
            values = [s[m] for s in scores if s.get(m) is not None]
            if values:
                v, lo, hi = M.bootstrap_ci(values, block.bootstrap, block.confidence, block.seed)
                out[sid][m] = {"value": v, "ci_low": lo, "ci_high": hi, "n": len(values)}
        if "perplexity" in block.metrics and nlls.get(sid):
            ppl, lo, hi = perplexity_ci(list(nlls[sid].values()), block.bootstrap, block.confidence, block.seed)
            out[sid]["perplexity"] = {"value": ppl, "ci_low": lo, "ci_high": hi, "n": len(nlls[sid])}
    return out


def perplexity_ci(nlls: list[tuple[float, int]], resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Token-weighted perplexity of the gold answers, with a bootstrap interval over items."""
    import random

    value = M.token_perplexity(nlls)
    rng, n = random.Random(seed), len(nlls)
    samples = []
    for _ in range(resamples):
        pick = [nlls[rng.randrange(n)] for _ in range(n)]
        samples.append(M.token_perplexity(pick))
    samples.sort()
    return value, samples[int((1 - confidence) / 2 * resamples)], samples[min(resamples - 1, int((1 + confidence) / 2 * resamples))]


def add_macro_f1(results: dict[str, Any], rows: dict[str, list[dict[str, Any]]], block: Any) -> None:
    """Macro-F1 over labels, with a bootstrap interval over items."""
    import random

    for sid, rs in rows.items():
        preds, golds = [r["prediction"] for r in rs], [r["gold"] for r in rs]
        value = M.macro_f1(preds, golds)
        rng, n = random.Random(block.seed), len(rs)
        samples = []
        for _ in range(block.bootstrap):
            idx = [rng.randrange(n) for _ in range(n)]
            samples.append(M.macro_f1([preds[i] for i in idx], [golds[i] for i in idx]))
        samples.sort()
        lo = samples[int((1 - block.confidence) / 2 * len(samples))]
        hi = samples[min(len(samples) - 1, int((1 + block.confidence) / 2 * len(samples)))]
        results[sid]["macro_f1"] = {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


def compare(per_item: dict[str, list[dict[str, float | None]]], block: Any,
            nlls: dict[str, dict[str, tuple[float, int]]] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Each system against the first: mean difference and paired-bootstrap p-value per metric (for perplexity,
    the difference of the token-weighted perplexities over the items both systems scored)."""
    systems = list(per_item)
    if len(systems) < 2:
        return {}
    first = systems[0]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sid in systems[1:]:
        out[sid] = {}
        for m in block.metrics:
            pairs = [(a[m], b[m]) for a, b in zip(per_item[sid], per_item[first])
                     if a.get(m) is not None and b.get(m) is not None]
            if not pairs:
                continue
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            out[sid][m] = {"difference": M.mean(a) - M.mean(b),
                           "p_value": M.paired_bootstrap_p(a, b, block.bootstrap, block.seed)}
        if "perplexity" in block.metrics and nlls:
            both = [i for i in nlls.get(sid, {}) if i in nlls.get(first, {})]
            if both:
                a2, b2 = [nlls[sid][i] for i in both], [nlls[first][i] for i in both]
                out[sid]["perplexity"] = {"difference": M.token_perplexity(a2) - M.token_perplexity(b2),
                                          "p_value": M.paired_perplexity_p(a2, b2, block.bootstrap, block.seed)}
    return out


def evaluate_gate(gate: Any, results: dict[str, dict[str, dict[str, float]]]) -> tuple[bool, str]:
    missing: list[str] = []

    def lookup(m: E.Metric) -> float:
        try:
            return float(results[m.system][m.metric][m.bound])
        except KeyError:
            missing.append(str(m))
            return float("nan")

    ok = bool(E.evaluate(gate, lookup))
    if missing:
        return False, f"no value for {', '.join(missing)} (the metric does not apply to that system)"
    values = ", ".join(f"{m} = {lookup(m):.4f}" for m in E.metrics(gate))
    margin = E.margin(gate, lookup)
    detail = values + (f"; margin {margin:+.4f}" if margin is not None else "")
    return ok, detail


def _partial_path(folder: Path, sid: str) -> Path:
    return folder / f"answers-{sid.replace(':', '_').replace('/', '_')}.jsonl"


def _load_partial(folder: Path, sid: str) -> dict[str, dict[str, Any]]:
    path = _partial_path(folder, sid)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        out[row["id"]] = row
    return out


def _save_partial(folder: Path, sid: str, item_id: str, ans: Answer, judged: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(_partial_path(folder, sid), "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": item_id, "prediction": ans.prediction, "sources": ans.sources,
                            "retrieved": ans.retrieved, "nll": list(ans.nll) if ans.nll else None,
                            "judge": judged}) + "\n")
