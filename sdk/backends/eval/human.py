"""An eval's expert side: human metrics from the grades beside the recipe (``human_pass`` per system, or
``human_pref`` against the first system), with bootstrap intervals and paired tests like every metric; how many
items still await grades; the experts' agreement with each other; the judge's agreement with the experts, and
whether a gate may trust it.

A grade belongs to an answer's text (its hash), so grades are matched to this run's answers: an answer that
changed since it was graded counts as ungraded."""

from __future__ import annotations

from typing import Any

from sdk import expr as E
from sdk import grades as G
from sdk import metrics as M


def _stats(values: list[float], block: Any) -> dict[str, float]:
    v, lo, hi = M.bootstrap_ci(values, block.bootstrap, block.confidence, block.seed)
    return {"value": v, "ci_low": lo, "ci_high": hi, "n": len(values)}


def human_results(spec: Any, block: Any, label: str, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """``{"results": sid -> metric -> cell, "comparisons": sid -> metric -> {difference, p_value}, "summary": ...}``
    for an eval with human grading or a judge (None otherwise). ``rows`` are the eval's rows per system, in the
    same item order."""
    human, has_judge = block.human, "judge" in block.metrics
    if human is None and not has_judge:
        return None
    path = G.grades_path(spec.base_dir, spec.name, label)
    grades = G.load(path)
    systems = list(rows)
    hashes = {sid: [G.answer_hash(r.get("prediction") or "") for r in rs] for sid, rs in rows.items()}
    items = [r["id"] for r in rows[systems[0]]] if systems else []
    shown = path.relative_to(spec.base_dir) if path.is_relative_to(spec.base_dir) else path
    out: dict[str, Any] = {"results": {}, "comparisons": {}, "summary": {"grades_file": str(shown)}}
    current = {(i, h) for sid in systems for i, h in zip(items, hashes[sid])}
    graded_now = [g for g in grades if (g["item"], g.get("answer")) in current
                  or ("answers" in g and all((g["item"], a) in current for a in g["answers"]))]
    if human is not None:
        fn = _pass_fail if human.mode == "pass_fail" else _pairwise
        complete = fn(block, systems, items, hashes, grades, out)
        need = min(human.min_items or len(items), len(items))
        awaiting = max(0, need - complete)
        out["summary"].update({"mode": human.mode, "graders": human.graders, "graded_items": complete,
                               "needed": need, "awaiting": awaiting,
                               "status": f"awaiting {awaiting} of {need} grades" if awaiting else
                               f"{complete} of {len(items)} items graded",
                               "agreement": G.expert_agreement(graded_now)})
    if has_judge:
        scores = G.judge_scores(r for rs in rows.values() for r in rs)
        agreement = G.judge_agreement(scores, graded_now)
        kappa, need_j, required = G.judge_rule(block)
        trusted, reason = G.trust_verdict(agreement, kappa, need_j) if required else \
            (True, "trusted without expert calibration (judge_agreement required = false)")
        out["summary"]["judge"] = {**agreement, "trusted": trusted, "reason": reason, "kappa_min": kappa,
                                   "min_items": need_j, "required": required}
    return out


def _pass_fail(block: Any, systems: list[str], items: list[str], hashes: dict[str, list[str]],
               grades: list[dict[str, Any]], out: dict[str, Any]) -> int:
    """human_pass per system: each answer scores the share of its graders who passed it. Returns the number of
    items whose every system's answer has ``graders`` grades."""
    votes = G.verdicts(grades)
    per: dict[str, list[float | None]] = {}
    counts = [True] * len(items)
    for sid in systems:
        per[sid] = []
        for n, (item, h) in enumerate(zip(items, hashes[sid])):
            v = votes.get((item, h), {})
            per[sid].append(sum(v.values()) / len(v) if v else None)
            counts[n] = counts[n] and len(v) >= block.human.graders
        values = [x for x in per[sid] if x is not None]
        if values:
            out["results"].setdefault(sid, {})["human_pass"] = _stats(values, block)
    first = systems[0] if systems else None
    for sid in systems[1:]:
        pairs = [(a, b) for a, b in zip(per[sid], per[first]) if a is not None and b is not None]  # type: ignore[index]
        if pairs:
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            cell = {"difference": M.mean(a) - M.mean(b), "p_value": M.paired_bootstrap_p(a, b, block.bootstrap,
                                                                                          block.seed)}
            out["comparisons"].setdefault(sid, {})["human_pass"] = cell
            if "human_pass" in out["results"].get(sid, {}):
                out["results"][sid]["human_pass"]["p_value"] = cell["p_value"]
    return sum(counts)


def _pairwise(block: Any, systems: list[str], items: list[str], hashes: dict[str, list[str]],
              grades: list[dict[str, Any]], out: dict[str, Any]) -> int:
    """human_pref of each system after the first: the share of its pairs with the first system's answer that the
    graders preferred (a tie, or the same text, counts half); its p-value tests it against 0.5 (paired)."""
    prefs = G.preferences(grades)
    first = systems[0] if systems else None
    counts = [True] * len(items)
    for sid in systems[1:]:
        scores: list[float] = []
        for n, (item, a, b) in enumerate(zip(items, hashes[first], hashes[sid])):  # type: ignore[index]
            if a == b:
                scores.append(0.5)
                continue
            p = prefs.get((item, frozenset((a, b))), {})
            counts[n] = counts[n] and len(p) >= block.human.graders
            if p:
                scores.append(sum(1.0 if x == b else 0.5 if x == "tie" else 0.0 for x in p.values()) / len(p))
        if scores:
            cell = _stats(scores, block)
            cell["p_value"] = M.paired_bootstrap_p(scores, [0.5] * len(scores), block.bootstrap, block.seed)
            out["results"].setdefault(sid, {})["human_pref"] = cell
            out["comparisons"].setdefault(sid, {})["human_pref"] = {"difference": cell["value"] - 0.5,
                                                                    "p_value": cell["p_value"]}
    return sum(counts) if len(systems) > 1 else 0


def gate_refusal(block: Any, human: dict[str, Any] | None) -> str | None:
    """Why a gate on the judge is refused this run (the judge does not yet agree with the experts), or None."""
    if block.gate is None or not any(m.metric == "judge" for m in E.metrics(block.gate)):
        return None
    judge = (human or {}).get("summary", {}).get("judge")
    if judge is None or judge.get("trusted"):
        return None
    return f"the judge is not trusted: {judge['reason']}"


def gate_pending(block: Any, human: dict[str, Any] | None) -> str | None:
    """``awaiting 37 of 60 grades`` when the gate reads a human metric and grades are still missing, else None."""
    if block.gate is None or not any(m.metric.startswith("human_") for m in E.metrics(block.gate)):
        return None
    summary = (human or {}).get("summary", {})
    return summary["status"] if summary.get("awaiting") else None
