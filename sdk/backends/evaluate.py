"""The ``eval`` step: every system of the block answers the same items; each metric gets a bootstrap confidence
interval and each difference from the first system a paired-bootstrap p-value; the gate decides promotion.

Scoring:
- generation (answer strings): exact match and token F1 against the answer and its aliases;
- multiple choice and classification: local models by the log-likelihood of each option after
  ``Question: ...\\nAnswer:`` (the lm-evaluation-harness convention); endpoints by parsing the chosen option;
- rag systems: their answer, citations against the item's ``sources``, retrieval recall@k and MRR; for choices and
  labels, the rag's local generator scores the options with the retrieved chunks in the prompt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdk import expr as E
from sdk import metrics as M
from sdk.backends.base import Artifact, Backend, CheckContext, GateFailed, StepContext, StepResult
from sdk.errors import DataError, DslError
from sdk.evalsets import EvalItem, contamination, load_items

RAW_PROMPT = "Question: {question}\nAnswer:"
CONTEXT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"


def system_id(system: Any) -> str:
    return f"endpoint:{system.model}" if hasattr(system, "url") else str(system)


class LocalModel:
    """A causal LM for generation and log-likelihood scoring."""

    def __init__(self, handle: Any) -> None:
        from sdk.backends.models import load

        self.model, self.tokenizer = load(handle, merge=bool(handle.adapter))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def loglik(self, context: str, continuation: str) -> float:
        """Sum of log p(continuation | context), tokenised as lm-eval does (whole string, then split)."""
        import torch

        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        cont = whole[len(ctx):] or self.encode(continuation)
        ids = (ctx + cont)[-self.max_len:]
        n = min(len(cont), len(ids) - 1)
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = ids[len(ids) - n:]
        positions = range(len(ids) - n - 1, len(ids) - 1)
        return float(sum(logprobs[p, t] for p, t in zip(positions, targets)))

    def nll(self, text: str) -> tuple[float, int]:
        import torch

        ids = self.encode(text)[: self.max_len]
        if len(ids) < 2:
            return 0.0, 0
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
        return float(out.loss) * (len(ids) - 1), len(ids) - 1

    def generate(self, question: str, max_new_tokens: int, context: Optional[str] = None) -> str:
        import torch

        content = question if context is None else f"{context}\n\n{question}"
        if self.tokenizer.chat_template:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                        add_generation_prompt=True, tokenize=False)
        else:
            prompt = RAW_PROMPT.format(question=content)
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
    nll: Optional[tuple[float, int]] = None


def _prompt_with(question: str, item: EvalItem, task: str) -> str:
    if task == "multiple_choice" and item.choices:
        opts = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(item.choices))
        return f"{question}\nOptions:\n{opts}\nAnswer with the number of the right option."
    if task == "classification":
        return f"{question}\nAnswer with one word."
    return question


class SystemRunner:
    """Answers items for one system (a model step, a rag step or an endpoint)."""

    def __init__(self, spec: Any, system: Any, artifacts: dict[str, Artifact], labels: list[str]) -> None:
        from sdk.spec import Endpoint

        self.spec, self.system, self.labels = spec, system, labels
        self.local: Optional[LocalModel] = None
        self.endpoint: Optional[EndpointModel] = None
        self.rag: Any = None
        if isinstance(system, Endpoint):
            self.endpoint = EndpointModel(system)
        elif system.kind == "rag":
            from sdk.backends.rag import RagSystem

            self.rag = RagSystem.open(spec, system.label, artifacts, with_generator=False)
            gen = spec.rag[system.label].generator
            if gen is not None and not isinstance(gen, Endpoint):
                self.local = _local(artifacts, str(gen))  # scores and generates with the model directly
            elif isinstance(gen, Endpoint):
                self.endpoint = EndpointModel(gen)
        else:
            self.local = _local(artifacts, str(system))

    def answer(self, item: EvalItem, task: str, max_new_tokens: int, want_nll: bool) -> Answer:
        context, sources, retrieved = None, [], []
        if self.rag is not None:
            docs = self.rag.retrieve(item.question)
            retrieved = [d["meta"].get("source", d["id"]) for d in docs]
            context = "\n".join(f"[{i + 1}] {d['content']}" for i, d in enumerate(docs))
            sources = list(dict.fromkeys(retrieved))
        if task in ("multiple_choice", "classification"):
            options = item.choices if task == "multiple_choice" else self.labels
            if self.local is not None:
                prompt = (CONTEXT_PROMPT.format(context=_short(context), question=item.question) if context
                          else RAW_PROMPT.format(question=item.question))
                scores = [self.local.loglik(prompt, " " + o) for o in options]  # type: ignore[union-attr]
                pred = options[max(range(len(options)), key=lambda i: scores[i])]  # type: ignore[index]
            else:
                text = self._ask(_prompt_with(item.question, item, task), context, 16)
                idx = M.parse_choice(text, options or [])
                pred = options[idx] if idx is not None else text  # type: ignore[index]
        else:
            pred = self._generate(item.question, context, max_new_tokens)
            if self.rag is not None:
                cited = sorted({int(n) for n in __import__("re").findall(r"\[(\d+)\]", pred) if 0 < int(n) <= len(retrieved)})
                if cited:
                    sources = list(dict.fromkeys(retrieved[i - 1] for i in cited))
        nll = None
        if want_nll and self.local is not None and item.answers:
            nll = self.local.nll(f"{RAW_PROMPT.format(question=item.question)} {item.answers[0]}")
        return Answer(pred, sources, retrieved, nll)

    def _generate(self, question: str, context: Optional[str], max_new_tokens: int) -> str:
        if self.local is not None:
            return self.local.generate(question, max_new_tokens, _short(context) if context else None)
        return self._ask(question, context, max_new_tokens)

    def _ask(self, question: str, context: Optional[str], max_tokens: int) -> str:
        assert self.endpoint is not None
        text = question if context is None else f"Use these documents and cite them as [n].\n{context}\n\n{question}"
        return self.endpoint.ask(text, max_tokens).strip()


def _short(context: Optional[str], words: int = 160) -> str:
    parts = (context or "").split()
    return " ".join(parts[:words])


def _local(artifacts: dict[str, Artifact], step_id: str) -> LocalModel:
    from sdk.backends.models import handle

    art = artifacts.get(step_id)
    if art is None:
        raise DslError(f"{step_id} has no finished artifact")
    return LocalModel(handle(art))


def score_item(item: EvalItem, ans: Answer, task: str, metrics: list[str], k: int) -> dict[str, Optional[float]]:
    out: dict[str, Optional[float]] = {}
    gold = item.gold
    for m in metrics:
        if m == "exact_match":
            out[m] = M.exact_match(ans.prediction, item.answers or [gold])
        elif m == "f1":
            out[m] = M.token_f1(ans.prediction, item.answers or [gold])
        elif m == "accuracy":
            out[m] = float(M.normalize(ans.prediction) == M.normalize(gold)) if task != "generate" \
                else M.exact_match(ans.prediction, item.answers or [gold])
        elif m == "citation_precision":
            out[m] = M.citation_precision(ans.sources, item.sources) if ans.retrieved else None
        elif m == "citation_recall":
            out[m] = M.citation_recall(ans.sources, item.sources) if ans.retrieved else None
        elif m == "recall_at_k":
            out[m] = M.recall_at_k(ans.retrieved, item.sources, k) if ans.retrieved else None
        elif m == "mrr":
            out[m] = M.reciprocal_rank(ans.retrieved, item.sources) if ans.retrieved else None
    return out


class EvalBackend(Backend):
    name = "builtin"
    version = "1"
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
        labels = sorted({it.label for it in items if it.label is not None})
        artifacts: dict[str, Artifact] = ctx.options.get("artifacts", ctx.inputs)
        k = max((ctx.spec.rag[s.label].top_k for s in block.systems if getattr(s, "kind", "") == "rag"), default=5)
        want_nll = "perplexity" in block.metrics
        rows: dict[str, list[dict[str, Any]]] = {}
        per_item: dict[str, list[dict[str, Optional[float]]]] = {}
        nlls: dict[str, list[tuple[float, int]]] = {}
        for system in block.systems:
            sid = system_id(system)
            runner = SystemRunner(ctx.spec, system, artifacts, labels)
            done = _load_partial(ctx.checkpoint_dir, sid)
            rows[sid], per_item[sid], nlls[sid] = [], [], []
            with ctx.progress.task(f"{ctx.step_id}: {sid}", total=len(items)) as bar:
                for item in items:
                    if item.id in done:
                        saved = done[item.id]
                        ans = Answer(saved["prediction"], saved["sources"], saved["retrieved"],
                                     tuple(saved["nll"]) if saved.get("nll") else None)
                    else:
                        try:
                            ans = runner.answer(item, task, block.max_new_tokens, want_nll)
                        except DslError as e:
                            raise DslError(f"{ctx.step_id}: {sid} stopped at item {item.id} ({e}); "
                                           f"{len(done)} answers are saved and the next apply resumes from them") from None
                        _save_partial(ctx.checkpoint_dir, sid, item.id, ans)
                        done[item.id] = {}
                    scores = score_item(item, ans, task, list(block.metrics), k)
                    if ans.nll:
                        nlls[sid].append(ans.nll)
                    per_item[sid].append(scores)
                    correct = scores.get("exact_match", scores.get("accuracy"))
                    rows[sid].append({"id": item.id, "system": sid, "question": item.question, "gold": item.gold,
                                      "prediction": ans.prediction, "correct": correct, "sources": ans.sources,
                                      "expected_sources": item.sources, "scores": scores})
                    bar.advance()
        results = aggregate(per_item, nlls, block)
        if "macro_f1" in block.metrics:
            add_macro_f1(results, rows, block)
        comparisons = compare(per_item, block)
        contam = self._contamination(ctx, items, block)
        metrics: dict[str, Any] = {**results, "n_items": len(items), "task": task,
                                   "contaminated_items": contam["contaminated"], "comparisons": comparisons}
        gate_text, gate_ok, gate_detail = None, True, ""
        if block.gate is not None:
            gate_text = E.to_text(block.gate)
            gate_ok, gate_detail = evaluate_gate(block.gate, results)
        summary = {"step": ctx.step_id, "task": task, "n_items": len(items), "systems": list(results),
                   "metrics": results, "comparisons": comparisons, "contamination": contam,
                   "gate": {"expression": gate_text, "passed": gate_ok, "detail": gate_detail} if gate_text else None}
        write_report(ctx.out_dir, summary, rows, artifacts, ctx.spec)
        outputs = {"report": "report.md", "html": "report.html", "predictions": "predictions.jsonl",
                   "chart": "metrics.png", "summary": "summary.json"}
        result = StepResult(metrics=metrics, outputs=outputs,
                            summary=f"{len(items)} items x {len(results)} systems ({task})"
                                    + (f"; gate {'passed' if gate_ok else 'FAILED'}" if gate_text else ""))
        if block.fail_on_contamination and contam["contaminated"]:
            raise GateFailed(f"{ctx.step_id}: {contam['contaminated']} eval items overlap the training data "
                             f"({block.ngram}-grams) and fail_on_contamination is set", result)
        if not gate_ok:
            raise GateFailed(f"{ctx.step_id}: gate {gate_text} failed: {gate_detail}", result)
        return result

    def _contamination(self, ctx: StepContext, items: list[EvalItem], block: Any) -> dict[str, Any]:
        if not block.contamination:
            return {"checked": False, "contaminated": 0, "items": {}}
        texts: list[str] = []
        for step_id, art in ctx.options.get("artifacts", {}).items():
            if step_id.startswith("corpus.") and (art.path / "chunks.jsonl").exists():
                texts += [json.loads(x)["content"] for x in (art.path / "chunks.jsonl").read_text().splitlines() if x.strip()]
            if step_id.startswith("dataset.") and (art.path / "train.jsonl").exists():
                for x in (art.path / "train.jsonl").read_text().splitlines():
                    row = json.loads(x)
                    texts.append(row.get("text") or " ".join(m["content"] for m in row.get("messages", [])))
        shares = contamination(items, texts, block.ngram)
        hit = {k: round(v, 3) for k, v in shares.items() if v > 0}
        return {"checked": True, "ngram": block.ngram, "contaminated": len(hit), "share": round(len(hit) / max(1, len(items)), 4),
                "items": hit}


def aggregate(per_item: dict[str, list[dict[str, Optional[float]]]], nlls: dict[str, list[tuple[float, int]]],
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
                out[sid][m] = {"value": round(v, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": len(values)}
        if "perplexity" in block.metrics and nlls.get(sid):
            total, n = sum(a for a, _ in nlls[sid]), sum(b for _, b in nlls[sid])
            ppl = M.perplexity(total, n)
            out[sid]["perplexity"] = {"value": round(ppl, 3), "ci_low": round(ppl, 3), "ci_high": round(ppl, 3), "n": len(nlls[sid])}
    return out


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
        results[sid]["macro_f1"] = {"value": round(value, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": n}


def compare(per_item: dict[str, list[dict[str, Optional[float]]]], block: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Each system against the first: mean difference and paired-bootstrap p-value per metric."""
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
            out[sid][m] = {"difference": round(M.mean(a) - M.mean(b), 4),
                           "p_value": round(M.paired_bootstrap_p(a, b, block.bootstrap, block.seed), 4)}
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
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        out[row["id"]] = row
    return out


def _save_partial(folder: Path, sid: str, item_id: str, ans: Answer) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(_partial_path(folder, sid), "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": item_id, "prediction": ans.prediction, "sources": ans.sources,
                            "retrieved": ans.retrieved, "nll": list(ans.nll) if ans.nll else None}) + "\n")


def write_predictions(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    flat = [r for rs in rows.values() for r in rs]
    flat.sort(key=lambda r: (r["correct"] is None, bool(r["correct"]), r["system"], r["id"]))
    with open(path, "w", encoding="utf-8") as f:
        for r in flat:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

