"""The ``eval`` step: every system of the block answers the same items; each metric gets a bootstrap confidence
interval and each difference from the first system a paired-bootstrap p-value; the gate decides promotion.
Models and endpoints are in :mod:`~sdk.backends.eval.clients`, answering in :mod:`~sdk.backends.eval.answers`,
statistics in :mod:`~sdk.backends.eval.stats`; metrics are registered in :mod:`sdk.metrics`.

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
from pathlib import Path
from typing import Any

from sdk import expr as E
from sdk.backends.base import Artifact, Backend, GateFailed, StepContext, StepResult
from sdk.backends.eval import cache as eval_cache
from sdk.backends.eval.answers import (  # noqa: F401 - re-exported
    Answer,
    Prompter,
    SystemRunner,
    load_partial,
    partial_path,
    save_partial,
    score_item,
    system_id,
    task_of,
)
from sdk.backends.eval.clients import DEFAULT_RUBRIC, RAW_PROMPT, Judge, LocalModel  # noqa: F401 - re-exported
from sdk.backends.eval.human import gate_pending, gate_refusal, human_results
from sdk.backends.eval.routed import RoutedRunner, is_router, routing_summary
from sdk.backends.eval.stats import aggregate, compare, evaluate_gate
from sdk.errors import DataError, DslError
from sdk.evalsets import EvalItem, contamination, load_items, scored_items, synth_items
from sdk.report import write_report
from sdk.spec import Endpoint, FileRef
from sdk.spec.blocks.eval import training_steps
from sdk.systems import applied_block, serving_of


def _text(spec: Any, value: Any) -> str | None:
    if value is None:
        return None
    return value.read(spec.base_dir) if isinstance(value, FileRef) else str(value)


class EvalBackend(Backend):
    name = "builtin"
    version = "3"  # 2: perplexity after each system's own prompt; 3: BCa intervals on numpy, retrieval/generation misses
    kinds = ("eval",)
    requires = ("torch", "transformers")
    install_hint = "pip install 'domain-dsl[all]'"

    # the eval set is read at plan time by sdk.datachecks (load_items, duplicate ids, the task's needs), for every
    # backend and only for an eval that will run

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        shown, reviewed = str(block.data), ""
        if isinstance(block.data, str):
            loaded = load_items(ctx.spec.resolve_path(block.data), block, block.data, limit=block.limit)
        else:  # data = synth.X: the candidates experts accepted; none yet fails the step, writing nothing
            try:
                loaded, reviewed = synth_items(ctx.input(block.data), block, limit=block.limit)
            except DslError as e:
                raise DslError(f"{ctx.step_id}: {e}") from None
            shown = f"{block.data}/rows.jsonl"
            ctx.log(f"{ctx.step_id}: {reviewed}")
        items, held_out = scored_items(loaded, shown)
        task = task_of(block, items)
        if task == "multiple_choice" and not all(it.choices for it in items):
            bad = next(it for it in items if not it.choices)
            raise DataError(shown, bad.line, f"item {bad.id} has no choices but the task is multiple_choice")
        labels = sorted({it.label for it in items if it.label is not None})
        if task == "classification" and len(labels) < 2:
            raise DataError(shown, None, f"classification needs at least two labels; found {labels or 'none'} "
                                              "(map the label column with fields = { label = \"...\" })")
        artifacts: dict[str, Artifact] = dict(ctx.inputs)
        k = max((applied_block(artifacts[str(s)]).top_k for s in block.systems if serving_of(s) == "rag"), default=5)
        want_nll = "perplexity" in block.metrics
        prompter = Prompter(_text(ctx.spec, block.prompt))
        judge = Judge(block.judge, _text(ctx.spec, block.rubric) or DEFAULT_RUBRIC) \
            if "judge" in block.metrics and block.judge is not None else None
        rows: dict[str, list[dict[str, Any]]] = {}
        per_item: dict[str, list[dict[str, float | None]]] = {}
        nlls: dict[str, dict[str, tuple[float, int]]] = {}  # system -> item id -> (NLL, tokens) of its answer
        answered: dict[str, dict[str, dict[str, Any]]] = {}
        # a router answers last: an item it sends to a system of this eval takes that system's saved answer
        for system in sorted(block.systems, key=is_router):
            answered[system_id(system)] = self._answer(ctx, block, system, items, artifacts, labels, task, prompter,
                                                       judge, want_nll, answered)
        for system in block.systems:
            sid = system_id(system)
            done = answered[sid]
            rows[sid], per_item[sid], nlls[sid] = [], [], {}
            for item in items:  # each item answered once per system; every metric scores that one answer
                saved = done[item.id]
                ans = Answer(saved["prediction"], saved["sources"], saved["retrieved"],
                             tuple(saved["nll"]) if saved.get("nll") else None,  # type: ignore[arg-type]
                             saved.get("evidence"))
                scores = score_item(item, ans, task, list(block.metrics), k, saved.get("judge"))
                if ans.nll:
                    nlls[sid][item.id] = ans.nll
                per_item[sid].append(scores)
                correct = next((scores[m] for m in ("accuracy", "exact_match") if scores.get(m) is not None), None)
                miss = None if correct != 0 or ans.evidence is None else \
                    ("generation" if ans.evidence else "retrieval")
                rows[sid].append({"id": item.id, "system": sid, "question": item.question, "gold": item.gold,
                                  "prediction": ans.prediction, "correct": correct, "sources": ans.sources,
                                  "retrieved": ans.retrieved, "expected_sources": item.sources,
                                  "miss": miss, "scores": scores, **({"routing": saved["routing"]}
                                                                     if saved.get("routing") else {})})
        results = aggregate(per_item, nlls, block, rows)
        comparisons = compare(per_item, block, nlls)
        for sid, by_metric in comparisons.items():  # gates may read each p-value as SYSTEM.METRIC.p_value
            for m, c in by_metric.items():
                if m in results.get(sid, {}):
                    results[sid][m]["p_value"] = c["p_value"]
        human = human_results(ctx.spec, block, ctx.label, rows)  # expert grades; the judge against them
        for part in ("results", "comparisons"):
            for sid, cells in (human or {}).get(part, {}).items():
                (results if part == "results" else comparisons).setdefault(sid, {}).update(cells)
        contam = self._contamination(ctx, items, block, artifacts)
        for system_rows in rows.values():
            for r in system_rows:
                r["contamination"] = contam["items"].get(r["id"], 0.0)
        metrics: dict[str, Any] = {**results, "n_items": len(items), "held_out_for_training": held_out, "task": task,
                                   "contaminated_items": contam["contaminated"], "comparisons": comparisons,
                                   **({"reviewed": reviewed} if reviewed else {})}
        if human is not None:
            metrics["human"] = human["summary"]
        gate_text, gate_ok, gate_detail = None, True, ""
        refused, pending = gate_refusal(block, human), gate_pending(block, human)
        if block.gate is not None:
            gate_text = E.to_text(block.gate)
            gate_ok, gate_detail = evaluate_gate(block.gate, results)
            if refused or pending:  # a judge not yet trusted fails the gate; missing grades leave it pending
                gate_ok, gate_detail = not refused, refused or f"pending: {pending}"
        routing = {system_id(s): routing_summary(rows[system_id(s)]) for s in block.systems if is_router(s)}
        summary = {"step": ctx.step_id, "task": task, "n_items": len(items), "held_out_for_training": held_out,
                   "systems": list(results),
                   **({"routing": routing} if routing else {}),
                   "metrics": results, "comparisons": comparisons, "contamination": contam,
                   "bootstrap": block.bootstrap, "confidence": block.confidence, "seed": block.seed,
                   **({"human": human["summary"]} if human is not None else {}),
                   "gate": {"expression": gate_text, "passed": gate_ok, "detail": gate_detail,
                            **({"pending": True} if pending and not refused else {})} if gate_text else None}
        outputs = write_report(ctx.out_dir, summary, rows, artifacts, ctx.spec)
        result = StepResult(metrics=metrics, outputs=outputs,
                            summary=f"{len(items)} items x {len(results)} systems ({task})"
                                    + (f"; {held_out} held out for training" if held_out else "")
                                    + (f"; {reviewed}" if reviewed else "")
                                    + (f"; {human['summary']['status']}" if human and "status" in human["summary"]
                                       else "")
                                    + (f"; gate {'pending' if pending and not refused else 'passed' if gate_ok else 'FAILED'}"
                                       if gate_text else ""))
        if block.fail_on_contamination and contam["contaminated"]:
            raise GateFailed(f"{ctx.step_id}: {contam['contaminated']} eval items overlap the training data "
                             f"({contam['contaminated']} of {len(items)} share {block.ngram}-grams with "
                             f"{', '.join(contam['steps'])}) and fail_on_contamination is set "
                             f"(items: {', '.join(list(contam['items'])[:10])})", result)
        if not gate_ok:
            raise GateFailed(f"{ctx.step_id}: gate {gate_text} failed: {gate_detail}", result)
        return result

    def _answer(self, ctx: StepContext, block: Any, system: Any, items: list[EvalItem],
                artifacts: dict[str, Artifact], labels: list[str], task: str, prompter: Prompter,
                judge: Judge | None, want_nll: bool,
                answered: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[str, dict[str, Any]]:
        """Every item's saved answer for one system (item id -> row). Answers saved by a killed apply are kept;
        the others are asked in chunks of ``batch_size`` (one by one for systems that answer one question at a
        time) and each is saved as soon as its chunk is answered, so a kill loses at most one chunk."""
        sid = system_id(system)
        reused = eval_cache.restore(ctx, sid, partial_path(ctx.checkpoint_dir, sid), items)  # unchanged items
        done = load_partial(ctx.checkpoint_dir, sid)
        if done and reused:
            ctx.log(f"{ctx.step_id}: {sid}: reusing {len(done)} answers of the last run (their items, the systems and "
                    f"the answering settings are unchanged); {len(items) - len(done)} to answer")
        elif done:
            ctx.log(f"{ctx.step_id}: {sid}: resuming with {len(done)} saved answers")
        pending = list({it.id: it for it in items if it.id not in done}.values())  # an id is answered once
        with ctx.progress.task(f"{ctx.step_id}: {sid}", total=len(items)) as bar:
            bar.advance(len(items) - len(pending))
            runner: SystemRunner | RoutedRunner | None = None
            start = 0
            while start < len(pending):
                chunk = pending[start:start + 1]
                try:
                    if runner is None:
                        runner = RoutedRunner(ctx.spec, system, artifacts, labels, task, prompter, answered) \
                            if is_router(system) else SystemRunner(ctx.spec, system, artifacts, labels, task, prompter)
                    chunk = pending[start:start + (block.batch_size if runner.batched else 1)]
                    answers = runner.answer_many(chunk, block.max_new_tokens, want_nll, block.batch_size)
                    for item, ans in zip(chunk, answers):
                        judged = judge.score(item, ans.prediction) if judge is not None else None
                        done[item.id] = save_partial(ctx.checkpoint_dir, sid, item.id, ans, judged,
                                                     eval_cache.item_key(item))
                        bar.advance()
                except Exception as e:
                    if not isinstance(e, DslError) and not _remote(artifacts, system):
                        raise
                    at = next(it.id for it in chunk if it.id not in done)
                    raise DslError(f"{ctx.step_id}: {sid} stopped at item {at}: {e}; {len(done)} answers are saved "
                                   f"for {sid} in {ctx.checkpoint_dir} and the next apply resumes from them") from None
                start += len(chunk)
        eval_cache.keep(ctx, sid, partial_path(ctx.checkpoint_dir, sid))
        return done

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


def _remote(artifacts: dict[str, Artifact], system: Any) -> bool:
    """An endpoint, a plugin's system, or a system applied with an endpoint generator: its failures are the
    upstream's, summarised with the answers saved so far (read from the applied block, not the recipe's)."""
    if isinstance(system, Endpoint) or serving_of(system) == "system":
        return True
    art = artifacts.get(str(system))
    try:
        return art is not None and isinstance(getattr(applied_block(art), "generator", None), Endpoint)
    except DslError:
        return False


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()] if path.exists() else []
