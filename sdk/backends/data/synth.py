"""The ``synth`` step: rows generated from a corpus by a teacher, filtered, reviewed, with a ledger.

For each chunk of the corpus (shuffled with the block's seed, at most ``rows``) the teacher writes a question and
its reference answer (:mod:`sdk.backends.data.synth_prompts`). Then, by task:

- ``qa``: the row is that question and answer, its chunk id kept;
- ``raft``: the rag system retrieves for the question; its best chunks other than the golden one are the
  distractors (hard negatives); the golden chunk and the distractors are shuffled, the teacher writes an answer
  that reasons from the golden chunk, quotes it and cites it by its number; a ``no_golden_share`` of the rows
  leave the golden chunk out (their answer then cites nothing). The user turn is the rag's own prompt rendered
  with those chunks, as the rag system will prompt the tuned model;
- ``preference``: chosen is the teacher's answer; rejected the ``student`` model's answer, or a corrupted copy;
- ``eval``: candidate eval items (never training data: a finetune or align naming one is a plan error).

The rows then go through the filters (:mod:`sdk.synthfilter`) and the experts' decisions (:mod:`sdk.reviews`);
``candidates.jsonl`` holds the rows after the filters, ``rows.jsonl`` the final rows, ``ledger.json`` every
dropped row with its reason (rows in = rows out + rows dropped). Teacher requests run ``concurrency`` at a time,
stop cleanly at ``budget_tokens`` and are journaled (:mod:`sdk.backends.data.synth_teacher`)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from sdk.backends.base import Backend, StepContext, StepResult
from sdk.backends.data import synth_judge
from sdk.backends.data.synth_prompts import (
    QUESTION_PROMPT,
    RAFT_ANSWER_PROMPT,
    corrupted,
    final_row,
    parse_qa,
    render,
    row_id,
    without_citations,
)
from sdk.backends.data.synth_teacher import EndpointTeacher, Journal, ModelTeacher, Usage, ask_all
from sdk.backends.rag.corpus import location, read_chunks
from sdk.backends.rag.system import RagSystem
from sdk.errors import DslError
from sdk.evalsets import load_items, synth_items
from sdk.grades import JUDGE_PASS
from sdk.spec import Problem
from sdk.spec.blocks.synth import decisions_file
from sdk.spec.values import FileRef
from sdk.systems import open_system


def _template(block: Any, attr: str, default: str, base: Path) -> str:
    value = getattr(block, attr)
    if value is None:
        return default
    return value.read(base) if isinstance(value, FileRef) else value


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def eval_items(spec: Any, inputs: dict[str, Any] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Every eval set of the recipe, as ``{"eval.X": [(item id, question and answers)]}`` (contamination): its file,
    or the items experts accepted of the synth step it reads (an input, see the synth kind's implicit edges; one
    still awaiting review has none yet)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for label, ev in spec.eval.items():
        if isinstance(ev.data, str):
            items = load_items(spec.resolve_path(ev.data), ev, ev.data)
        elif (inputs or {}).get(str(ev.data)) is not None:
            items, _ = synth_items(inputs[str(ev.data)], ev, empty_ok=True)  # type: ignore[index]
        else:
            continue
        out[f"eval.{label}"] = [(it.id, " ".join([it.question, *it.answers])) for it in items]
    return out


def _basic_filters(rows: list[dict[str, Any]], options: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Empty, over-long and exactly repeated rows (used only where :mod:`sdk.synthfilter` is not installed)."""
    kept, dropped, seen = [], [], set()
    for r in rows:
        sizes = [len(r.get("question") or ""), len(r.get("answer") or "")]
        key = (r.get("question", "").strip().lower(), r.get("answer", "").strip().lower())
        reason = ("empty" if min(sizes) < max(1, options.get("min_chars", 1)) else
                  "too_long" if max(sizes) > options.get("max_chars", 4000) else
                  "exact_duplicate" if options.get("dedupe", "near") != "none" and key in seen else None)
        seen.add(key)
        if reason:
            dropped.append({"id": r["id"], "reason": reason, "detail": ""})
        else:
            kept.append(r)
    return kept, dropped


def apply_filters(spec: Any, block: Any, rows: list[dict[str, Any]],
                  inputs: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    options = block.filters.model_dump(mode="json")
    for name in ("judge", "rubric", "judge_agreement"):  # the judge itself ran before: its scores are on the rows
        options.pop(name, None)
    if block.filters.judge is not None and options.get("judge_min") is None:
        options["judge_min"] = JUDGE_PASS
    try:
        from sdk.synthfilter import filter_rows  # local: optional here, its absence falls back below
    except ImportError:
        return _basic_filters(rows, options)
    items = eval_items(spec, inputs) if block.filters.contamination else {}
    return filter_rows(rows, options=options, eval_items=items, embed=None)


def apply_review(spec: Any, label: str, block: Any, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The experts' decisions applied (``review = none`` still honours rejections and edits on file)."""
    path = decisions_file(spec, label)
    if block.review == "none" and not path.is_file():
        return rows, [], 0
    try:
        from sdk import reviews  # local: optional here, its absence is reported below
    except ImportError:
        raise DslError(f"synth.{label}: review = {block.review} needs sdk.reviews, which is not installed") from None
    decisions = reviews.load(path) if path.is_file() else {}
    kept, dropped = reviews.apply(rows, decisions, block.review)
    return kept, dropped, len(decisions)


class SynthBackend(Backend):
    name = "teacher"
    version = "1"
    kinds = ("synth",)
    requires = ("openai", "jinja2")

    def check(self, ctx: Any) -> list[Any]:
        out = []
        block: Any = ctx.block
        if not isinstance(block.teacher, str) and hasattr(block.teacher, "url"):
            url = str(block.teacher.url)
            if not url.startswith(("http://", "https://")):
                out.append(Problem(path=ctx.path + ("teacher", "url"), message=f"teacher url {url!r} is not an "
                                   "http(s) URL of an OpenAI-compatible API", hint="e.g. url = \"http://127.0.0.1:8000/v1\""))
        return out

    def _teacher(self, ctx: StepContext) -> Any:
        block: Any = ctx.block
        if hasattr(block.teacher, "url"):
            return EndpointTeacher(block.teacher, block.concurrency, ctx.step_id)
        return self._model(ctx, str(block.teacher))

    @staticmethod
    def _model(ctx: StepContext, ref: str) -> ModelTeacher:
        """A model step (teacher or student) opened from its applied artifact by its kind's opener, as the eval and
        the gateway open it; journaled under its artifact's fingerprint (a retrained model is asked again)."""
        art = ctx.input(ref)
        system = open_system(art, spec=ctx.spec, base_dir=ctx.spec.base_dir)
        return ModelTeacher(system, f"{ref}:{art.manifest.get('fingerprint', art.path.name)}")

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        chunks = [c for c in read_chunks(ctx.input(block.corpus)) if c["content"].strip()]
        random.Random(block.seed).shuffle(chunks)
        chunks = chunks[: block.rows]
        trusted = synth_judge.trust(ctx.spec, block, ctx.step_id, ctx.workdir) if block.filters.judge else None
        if trusted:  # checked before any teacher call: a refused judge costs nothing
            ctx.log(trusted)
        teacher = self._teacher(ctx)
        journal = Journal(ctx.workdir / "cache" / "synth" / ctx.label / "journal.jsonl")
        usage = Usage(budget=block.budget_tokens)
        base = ctx.spec.base_dir
        question_tpl = _template(block, "prompt", QUESTION_PROMPT, base)
        try:
            requests = [[{"role": "user", "content": render(question_tpl, f"{ctx.step_id}: the prompt template",
                                                            chunk=c["content"], source=location(c["meta"]),
                                                            task=block.task)}] for c in chunks]
            with ctx.progress.task(f"{ctx.step_id}: {len(chunks)} questions from {teacher.ident}",
                                   total=len(chunks)) as bar:
                replies = ask_all(teacher, requests, max_tokens=block.max_tokens, journal=journal, usage=usage,
                                  concurrency=block.concurrency, advance=bar.advance)
            rows, unparsed = [], []
            for chunk, reply in zip(chunks, replies):
                if reply is None:
                    continue  # the budget stopped it
                qa = parse_qa(reply)
                row = {"task": block.task, "chunk_id": chunk["id"], "source": location(chunk["meta"]),
                       "chunk": chunk["content"], "question": qa[0] if qa else "", "answer": qa[1] if qa else ""}
                row["id"] = row_id(block.task, chunk["id"], row["question"] or reply)
                (rows if qa else unparsed).append(row)
            render_context = None
            if block.task == "raft":
                rows, render_context = self._raft(ctx, block, rows, teacher, journal, usage, {c["id"]: c for c in chunks})
            elif block.task == "preference":
                rows = self._preference(ctx, block, rows, journal)
            judged = synth_judge.judge_rows(ctx, block, rows, journal) if block.filters.judge else {}
        finally:
            journal.close()
        return self._finish(ctx, block, rows, unparsed, usage, render_context, judged)

    def _raft(self, ctx: StepContext, block: Any, rows: list[dict[str, Any]], teacher: Any, journal: Any,
              usage: Any, by_id: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        rag = RagSystem.open(ctx.input(block.rag), with_generator=False, base_dir=ctx.spec.base_dir, spec=ctx.spec)
        answer_tpl = _template(block, "answer_prompt", RAFT_ANSWER_PROMPT, ctx.spec.base_dir)
        no_golden = set(random.Random(block.seed).sample(range(len(rows)), round(block.no_golden_share * len(rows))))
        requests = []
        for i, row in enumerate(rows):
            found = rag.retrieve(row["question"], top_k=block.distractors + 1)
            distractors = [d for d in found if d["id"] != row["chunk_id"]][: block.distractors]
            golden = by_id[row["chunk_id"]]
            docs = [{"id": golden["id"], "content": golden["content"], "meta": golden["meta"]}] + \
                [{"id": d["id"], "content": d["content"], "meta": d["meta"]} for d in distractors]
            random.Random(f"{block.seed}:{row['id']}").shuffle(docs)
            cite = next(n for n, d in enumerate(docs, 1) if d["id"] == row["chunk_id"])
            row.update(distractors=[d["id"] for d in distractors], golden=i not in no_golden,
                       documents=docs if i not in no_golden else [d for d in docs if d["id"] != row["chunk_id"]])
            requests.append([{"role": "user", "content": render(
                answer_tpl, f"{ctx.step_id}: the answer_prompt template", question=row["question"],
                chunk=golden["content"], source=location(golden["meta"]), cite=cite)}])
        with ctx.progress.task(f"{ctx.step_id}: {len(rows)} raft answers", total=len(rows)) as bar:
            answers = ask_all(teacher, requests, max_tokens=block.max_tokens, journal=journal, usage=usage,
                              concurrency=block.concurrency, advance=bar.advance)
        out = []
        for row, answer in zip(rows, answers):
            if answer is None:
                continue  # the budget stopped it: the row is not generated
            answer = answer.strip()
            out.append({**row, "answer": answer if row["golden"] else without_citations(answer)})
        return out, rag.render_prompt

    def _preference(self, ctx: StepContext, block: Any, rows: list[dict[str, Any]],
                    journal: Journal) -> list[dict[str, Any]]:
        """Chosen: the teacher's answer. Rejected: the student model's answer to the question (journaled like the
        teacher's, its tokens apart from the teacher's budget), or a corrupted copy of the teacher's answer."""
        if block.student is None:
            rejected: list[str | None] = [corrupted(r["answer"], r["chunk"], r["id"]) for r in rows]
        else:
            student = self._model(ctx, str(block.student))
            with ctx.progress.task(f"{ctx.step_id}: {len(rows)} answers from {block.student}", total=len(rows)) as bar:
                rejected = ask_all(student, [[{"role": "user", "content": r["question"]}] for r in rows],
                                   max_tokens=block.max_tokens, journal=journal, usage=Usage(), concurrency=1,
                                   advance=bar.advance)
        return [{**r, "chosen": r["answer"], "rejected": (bad or "").strip()} for r, bad in zip(rows, rejected)]

    def _finish(self, ctx: StepContext, block: Any, rows: list[dict[str, Any]], unparsed: list[dict[str, Any]],
                usage: Any, render_context: Any = None, judged: dict[str, Any] | None = None) -> StepResult:
        dropped = [{"id": r["id"], "reason": "empty", "detail": "the teacher's reply holds no question and answer"}
                   for r in unparsed]
        kept, filtered = apply_filters(ctx.spec, block, rows, ctx.inputs)
        dropped += filtered
        _write_jsonl(ctx.out_dir / "candidates.jsonl", kept)
        final, reviewed, decisions = apply_review(ctx.spec, ctx.label, block, kept)
        dropped += reviewed
        by_reason = dict(sorted(Counter(d["reason"] for d in dropped).items()))
        n_in = len(rows) + len(unparsed)
        if n_in != len(final) + len(dropped):
            raise DslError(f"{ctx.step_id}: the ledger does not balance ({n_in} rows in, {len(final)} out, "
                           f"{len(dropped)} dropped)")
        out_rows = [final_row(block.task, r, render_context) for r in final]
        _write_jsonl(ctx.out_dir / "rows.jsonl", out_rows)
        ledger = {"in": n_in, "out": len(final), "dropped": dropped, "by_reason": by_reason}
        (ctx.out_dir / "ledger.json").write_text(json.dumps(ledger, indent=2, ensure_ascii=False))
        cost = None
        if block.price is not None:
            cost = round((usage.tokens_in * block.price.input + usage.tokens_out * block.price.output) / 1e6, 6)
        metrics: dict[str, Any] = {"rows_in": n_in, "rows_out": len(final), "by_reason": by_reason,
                                   "tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out,
                                   "requests": usage.requests, "requests_sent": usage.sent,
                                   "requests_journaled": usage.cached, "budget_stopped": usage.stopped,
                                   "decisions": decisions, **(judged or {})}
        if cost is not None:
            metrics["cost"] = cost
        if usage.stopped:
            ctx.log(f"{ctx.step_id}: stopped at the token budget ({usage.tokens} of {block.budget_tokens} tokens "
                    f"used): kept the {n_in} rows generated of {block.rows} asked")
        outputs: dict[str, Any] = {"rows": "rows.jsonl", "candidates": "candidates.jsonl", "ledger": "ledger.json",
                                   "task": block.task}
        if block.task in ("qa", "raft"):
            outputs.update(train="rows.jsonl", format="chat")
        drops = ", ".join(f"{n} {reason}" for reason, n in by_reason.items())
        summary = f"{block.task}: {n_in} rows in, {len(final)} out" + (f" (dropped: {drops})" if drops else "")
        if usage.stopped:
            summary += f"; stopped at the token budget ({usage.tokens} tokens)"
        return StepResult(metrics=metrics, outputs=outputs, summary=summary)
