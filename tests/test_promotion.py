"""Promotion with a human-graded gate still awaiting grades: the apply went on (the eval is done), the system is
withheld with an honest reason (never "gate passed"), and it is promoted once the grades pass the gate."""

from __future__ import annotations

from typing import Any

from sdk.promotion import promotion, withheld


def _entries(summary: str, human: dict[str, Any], status: str = "done") -> dict[str, dict[str, Any]]:
    return {"rag.a": {"status": "done"}, "rag.b": {"status": "done"},
            "eval.mc": {"status": status, "summary": summary, "metrics": {"human": human},
                        "config": {"gate": "rag.a.human_pass >= 0.75"}}}


def test_a_pending_gate_withholds_its_system_and_says_how_many_grades_are_missing() -> None:
    entries = _entries("4 items x 2 systems (qa); awaiting 37 of 60 grades; gate pending",
                       {"awaiting": 37, "needed": 60, "status": "awaiting 37 of 60 grades"})
    promo = promotion(entries)
    assert promo["rag.a"] == {"promoted": False, "pending": True, "decided_by": ["eval.mc"],
                              "reason": "gate of eval.mc pending: awaiting 37 of 60 grades"}
    assert promo["rag.b"]["promoted"] is True and promo["rag.b"]["reason"] == "applied; no gate names it"
    assert withheld(entries) == {"rag.a": "gate of eval.mc pending: awaiting 37 of 60 grades"}


def test_the_same_gate_once_graded_promotes() -> None:
    entries = _entries("4 items x 2 systems (qa); gate passed", {"awaiting": 0, "needed": 60})
    assert promotion(entries)["rag.a"] == {"promoted": True, "reason": "gate of eval.mc passed",
                                           "decided_by": ["eval.mc"]}
    failed = _entries("4 items x 2 systems (qa); gate FAILED", {"awaiting": 0}, status="gate_failed")
    assert promotion(failed)["rag.a"]["reason"] == "gate of eval.mc failed"


def test_a_kind_declared_to_evaluate_promotes_as_the_eval_does_whatever_its_name(monkeypatch: Any) -> None:
    import pytest

    from sdk.spec import kinds as K

    assert K.kinds_that_evaluate() == ["eval"] and K.evaluates("eval.expert") and K.evaluates("eval")
    assert not K.evaluates("rag.docs") and not K.evaluates("nosuch.x") and not K.evaluates("evaluation.x")
    exam = K.Kind(name="exam", block=object, backend="exam", evaluates=True)  # a plugin's eval-like kind
    monkeypatch.setitem(K._KINDS, "exam", exam)
    gate = {"gate": "rag.a.f1 >= 0.9"}
    entries = {"rag.a": {"status": "done"}, "rag.b": {"status": "done"},
               "exam.x": {"status": "gate_failed", "error": "f1 0.4 < 0.9", "config": gate},
               "corpus.c": {"status": "gate_failed", "config": {"gate": "rag.b.f1 >= 0.9"}}}  # declares no evaluating
    promo = promotion(entries)
    assert promo["rag.a"] == {"promoted": False, "reason": "gate of exam.x failed", "decided_by": ["exam.x"]}
    assert promo["rag.b"]["promoted"] is True  # a gate in a step whose kind does not evaluate decides nothing
    assert K.kinds_that_evaluate() == ["eval", "exam"]
    with pytest.raises(ValueError, match="cannot evaluate"):
        K.Kind(name="knob", block=object, role="setting", evaluates=True)
