"""The report tells a retrieval miss from a generation miss: for the best system's wrong answers, what retrieval
found, and counts of both."""

from __future__ import annotations

import json
from pathlib import Path

from sdk.backends.eval.answers import found_evidence
from sdk.evalsets import EvalItem
from sdk.report import best_system, misses, write_report


def _item(**kw):  # type: ignore[no-untyped-def]
    base = {"id": "1", "question": "What is the T3412 timer of profile K7?", "answers": ["54 minutes"],
            "choices": None, "label": None, "sources": [], "context": None, "line": 1}
    base.update(kw)
    return EvalItem(**{k: v for k, v in base.items() if k in EvalItem.__dataclass_fields__})


def test_evidence_is_a_gold_source_or_the_answer_in_a_chunk() -> None:
    with_sources = _item(sources=["profiles/k7.md"])
    assert found_evidence(with_sources, ["/x/profiles/k7.md", "a.md"], ["..."]) is True
    assert found_evidence(with_sources, ["a.md"], ["the T3412 timer of K7 is 54 minutes"]) is False
    plain = _item()
    assert found_evidence(plain, ["a.md"], ["For profile K7 the T3412 timer is 54 minutes."]) is True
    assert found_evidence(plain, ["a.md"], ["Profile K9 uses 12 minutes."]) is False


def test_the_report_shows_the_best_systems_misses_by_cause(tmp_path: Path) -> None:
    def row(i: int, sid: str, correct: float, miss: str | None) -> dict:
        return {"id": str(i), "system": sid, "question": f"q{i}", "gold": "g", "prediction": "p", "correct": correct,
                "sources": [], "retrieved": ["notes/k7.md", "notes/k9.md"] if miss else [], "miss": miss,
                "expected_sources": [], "scores": {}}

    rows = {"finetune.sip": [row(i, "finetune.sip", 0.0, None) for i in range(4)],
            "rag.tuned": [row(0, "rag.tuned", 1.0, None), row(1, "rag.tuned", 0.0, "retrieval"),
                          row(2, "rag.tuned", 0.0, "generation"), row(3, "rag.tuned", 0.0, "generation")]}
    summary = {"step": "eval.x", "n_items": 4, "task": "generate", "systems": list(rows), "comparisons": {},
               "metrics": {"finetune.sip": {"exact_match": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}},
                           "rag.tuned": {"exact_match": {"value": 0.25, "ci_low": 0.0, "ci_high": 0.75}}}}
    assert best_system(summary) == "rag.tuned"
    assert misses(rows["rag.tuned"]) == {"wrong": 3, "retrieval": 1, "generation": 2}
    write_report(tmp_path, summary, rows, {}, None)
    md = (tmp_path / "report.md").read_text()
    assert "## Wrong answers of the best system, rag.tuned" in md
    assert "3 wrong: 1 retrieval misses (the answer was not in the retrieved chunks), 2 generation misses" in md
    assert "| 1 | q1 | g | p | k7.md, k9.md | retrieval |" in md
    assert "finetune.sip |" not in md.split("## Wrong answers")[1]  # only the best system's
    assert json.loads((tmp_path / "summary.json").read_text())["misses"] == {"system": "rag.tuned", "wrong": 3,
                                                                            "retrieval": 1, "generation": 2}
    assert "retrieval misses" in (tmp_path / "report.html").read_text()
