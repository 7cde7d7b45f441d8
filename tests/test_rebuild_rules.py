"""What re-runs when (docs/sdk.md's table), one test per rule: a dependent's fingerprint follows what its inputs
produced, not how they were configured (early cutoff), and what is used is what was applied."""

from __future__ import annotations

import json
from pathlib import Path

import sdk
from dsl.parser import load
from sdk.plans import Action
from tests._specs import SMALL, write_small
from tests.conftest import run_dsl


def _apply(path: Path, **kw):  # type: ignore[no-untyped-def]
    return sdk.apply(load(path), backend="test", **kw)


def _pending(path: Path) -> set[str]:
    return {s.id for s in sdk.plan(load(path), backend="test").steps if s.action is not Action.NOOP}


def test_an_eval_attribute_reruns_the_eval_only(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    _apply(path)
    path.write_text(SMALL.replace("metrics = [exact_match, f1]", "metrics = [exact_match, f1]\n    max_new_tokens = 9"))
    plan = sdk.plan(load(path), backend="test")
    assert plan.step("serve.default").reason == "input eval.expert will change"  # it reads the eval's verdict
    assert plan.step("route.default").action is Action.NOOP  # the router reads only its examples
    result = _apply(path)
    assert result.ran == ["eval.expert"]  # same verdict: serve stays up to date (early cutoff)
    serve = next(o for o in result.outcomes if o.id == "serve.default")
    assert serve.status == "up_to_date"
    assert _pending(path) == set()


def test_a_verdict_that_flips_reruns_serving(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    _apply(path)
    path.write_text(SMALL.replace("gate = rag.docs.f1 >= 0", "gate = rag.docs.f1 > rag.docs.f1"))
    result = _apply(path)
    assert set(result.ran) == {"eval.expert", "serve.default"} and result.gate_failures


def test_replace_reruns_the_step_and_only_dependents_whose_inputs_differ(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    _apply(path)
    same = _apply(path, replace=["corpus.docs"])  # re-chunking gives the same chunks
    assert same.ran == ["corpus.docs"]
    (tmp_path / "corpus" / "a.txt").write_text("SIP sets up calls; SDP describes their media.\n")
    changed = _apply(path)  # new content: everything that reads the corpus, directly or not, re-runs
    assert {"corpus.docs", "pretrain.base", "finetune.sip", "rag.docs", "eval.expert"} <= set(changed.ran)


def test_a_route_reading_eval_questions_ignores_metric_changes_but_not_new_questions(tmp_path: Path) -> None:
    recipe = SMALL.replace('    examples = "route.jsonl"\n', '    examples = "route.jsonl"\n    eval_sets = [eval.expert]\n')
    recipe = recipe.replace("systems = [pretrain.base, finetune.sip, rag.docs]", "systems = [pretrain.base, finetune.sip]")
    recipe = recipe.replace("gate = rag.docs.f1 >= 0", "gate = finetune.sip.f1 >= 0")
    path = write_small(tmp_path, recipe)
    _apply(path)
    path.write_text(recipe.replace("metrics = [exact_match, f1]", "metrics = [exact_match, f1]\n    max_new_tokens = 9"))
    assert "route.default" not in _apply(path).ran  # it reads the eval's items, which did not change
    (tmp_path / "eval.jsonl").write_text('{"id": "9", "question": "What does IMS stand for?", "answer": "IP"}\n')
    assert "route.default" in _apply(path).ran


def test_what_is_used_is_what_was_applied_and_the_drift_is_said(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    _apply(path)
    path.write_text(SMALL.replace("    generator = finetune.sip\n", "    generator = finetune.sip\n    top_k = 8\n"))
    status = json.loads(run_dsl("status", str(path), "--json").stdout)
    row = next(r for r in status["steps"] if r["id"] == "rag.docs")
    assert row["drift"] == ("rag.docs changed since it was applied (top_k 5 -> 8): using the applied version; "
                            "run dsl apply")
    from sdk.systems import applied_block
    from sdk.workspace import open_workspace

    ws = open_workspace(path)
    assert applied_block(ws.artifact("rag.docs")).top_k == 5 and ws.spec.rag["docs"].top_k == 8
    assert next(r for r in status["steps"] if r["id"] == "finetune.sip")["drift"] is None


def test_status_shows_each_systems_promotion_and_the_eval_that_decided(tmp_path: Path) -> None:
    path = write_small(tmp_path, SMALL.replace("gate = rag.docs.f1 >= 0", "gate = rag.docs.f1 > rag.docs.f1"))
    _apply(path)
    r = run_dsl("status", str(path))
    assert "withheld: gate of eval.expert failed" in r.stdout and "promoted: applied; no gate names it" in r.stdout
    rows = {x["id"]: x for x in json.loads(run_dsl("status", str(path), "--json").stdout)["steps"]}
    assert rows["rag.docs"]["promotion"] == {"promoted": False, "reason": "gate of eval.expert failed",
                                             "decided_by": ["eval.expert"]}
    assert rows["eval.expert"]["promotion"] is None  # an eval is not a system
