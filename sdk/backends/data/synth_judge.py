"""The synth filters' judge: an LLM judge (an OpenAI-compatible endpoint, as the eval's ``judge``) grades each
generated row 1 to 5 (mapped to 0-1, the eval judge's scale); the filters drop rows under ``judge_min`` with reason
``judge``. Its requests go through the teacher's machinery (:func:`sdk.backends.data.synth_teacher.ask_all`):
concurrent, retried, journaled in the step's journal, so a re-run or a resume after ``kill -9`` asks the judge
nothing it has already answered. They have their own token count: the judge's tokens never spend the teacher's
``budget_tokens``.

A judge is trusted only as far as it agrees with the experts (:mod:`sdk.grades`): the step refuses to run with a
judge that an eval with human grading and the same judge has not calibrated (kappa and items from that eval's
``judge_agreement``), unless the filters say ``judge_agreement = { required = false }``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.backends.data.synth_prompts import render
from sdk.backends.data.synth_teacher import EndpointTeacher, Journal, Usage, ask_all
from sdk.backends.eval.clients import judge_score
from sdk.errors import DslError
from sdk.grades import calibrating_eval, judge_trusted
from sdk.spec.values import FileRef

JUDGE_PROMPT = """You grade a question and its answer, written from the passage below, for a domain training set.
Rubric:
{{ rubric }}

Passage (from {{ source }}):
{{ chunk }}

Question: {{ question }}
Answer to grade: {{ answer }}

Reply with one score from 1 (wrong) to 5 (fully correct), then a short reason."""

DEFAULT_RUBRIC = ("5: the answer is correct, complete and supported by the passage, and the question makes sense "
                  "without it; 3: partly correct or partly supported; 1: wrong, unsupported or no answer.")


def trust(spec: Any, block: Any, step_id: str, workdir: Path) -> str:
    """Why the filter's judge may be used (a sentence for the log); a DslError when it may not: no eval with human
    grading calibrates it, or its agreement with the experts there is below that eval's judge_agreement."""
    judge, opt = block.filters.judge, block.filters.judge_agreement
    if opt is not None and not opt.required:
        return f"{step_id}: the judge {judge.model} is used without expert calibration (judge_agreement required = false)"
    label = calibrating_eval(spec, judge)
    if label is None:
        raise DslError(f"{step_id}: the judge filter is refused: no eval with human grading uses the judge "
                       f"{judge.model} (same url and model) to check it against the experts; add one, or write "
                       "judge_agreement = { required = false } in filters")
    ok, why = judge_trusted(spec.base_dir, spec, label, workdir)
    if not ok:
        raise DslError(f"{step_id}: the judge filter is refused: {why}")
    return f"{step_id}: {why}"


def judge_rows(ctx: Any, block: Any, rows: list[dict[str, Any]], journal: Journal) -> dict[str, Any]:
    """Set each row's ``judge_score`` (None when the judge's reply holds no score: the row is kept, and counted);
    returns the judge's figures for the manifest."""
    f = block.filters
    rubric = f.rubric.read(ctx.spec.base_dir) if isinstance(f.rubric, FileRef) else (f.rubric or DEFAULT_RUBRIC)
    judge = EndpointTeacher(f.judge, block.concurrency, f"{ctx.step_id} (judge)")
    judge.ident = f"judge:{judge.ident}"  # its journal entries never answer a teacher request
    requests = [[{"role": "user", "content": render(
        JUDGE_PROMPT, f"{ctx.step_id}: the judge prompt", rubric=rubric, source=r.get("source", ""),
        chunk=r.get("chunk", ""), question=r.get("question", ""), answer=r.get("chosen", r.get("answer", "")))}]
        for r in rows]
    usage = Usage()
    with ctx.progress.task(f"{ctx.step_id}: the judge grades {len(rows)} rows", total=len(rows)) as bar:
        replies = ask_all(judge, requests, max_tokens=64, journal=journal, usage=usage,
                          concurrency=block.concurrency, advance=bar.advance)
    unscored = 0
    for row, reply in zip(rows, replies):
        row["judge_score"] = judge_score(reply)
        unscored += row["judge_score"] is None
    return {"judge_requests": usage.requests, "judge_requests_sent": usage.sent, "judge_tokens_in": usage.tokens_in,
            "judge_tokens_out": usage.tokens_out, "judge_unscored": unscored}
