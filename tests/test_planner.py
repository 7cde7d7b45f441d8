"""The planner is pure and its fingerprints change exactly when they should."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.errors import DslError
from sdk.plans import Action, Plan
from tests._specs import SMALL, write_small

ALL = ["base_model.tiny", "corpus.docs", "dataset.qa", "pretrain.base", "finetune.sip", "rag.docs", "eval.expert",
       "route.default", "serve.default"]


def _plan(path: Path, **kw):  # type: ignore[no-untyped-def]
    return sdk.plan(load(path), backend="test", **kw)


def _changed(path: Path) -> set[str]:
    return {s.id for s in _plan(path).steps if s.action is not Action.NOOP}


def test_first_plan_creates_everything_in_dependency_order(tmp_path: Path) -> None:
    plan = _plan(write_small(tmp_path))
    ids = [s.id for s in plan.steps]
    assert sorted(ids) == sorted(ALL)
    assert all(s.action is Action.CREATE for s in plan.steps)
    pos = {s: i for i, s in enumerate(ids)}
    for s in plan.steps:
        assert all(pos[d] < pos[s.id] for d in s.depends_on)
    assert plan.step("finetune.sip").depends_on == ["pretrain.base", "dataset.qa"]
    assert set(plan.step("serve.default").depends_on) >= {"route.default", "eval.expert", "rag.docs"}


def test_plan_is_pure_and_deterministic(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    a, b = _plan(path), _plan(path)
    assert [s.to_json() for s in a.steps] == [s.to_json() for s in b.steps]
    assert not (tmp_path / ".dsl").exists()  # planning writes nothing


@pytest.mark.parametrize(
    "old,new,expected",
    [
        # the router reads only its examples: no model, rag or eval change re-plans it
        ("max_steps = 2", "max_steps = 3", {"finetune.sip", "rag.docs", "eval.expert", "serve.default"}),
        # serve is planned "~ input eval.expert will change"; apply then keeps it (same verdict: early cutoff)
        ('metrics = [exact_match, f1]', 'metrics = [exact_match, f1, accuracy]', {"eval.expert", "serve.default"}),
        ("port = 8123", "port = 8124", {"serve.default"}),
        ("length = 50, overlap = 5", "length = 60, overlap = 5",
         {"corpus.docs", "pretrain.base", "finetune.sip", "rag.docs", "eval.expert", "serve.default"}),
    ],
)
def test_changing_one_attribute_replans_that_step_and_its_dependents(tmp_path: Path, old: str, new: str,
                                                                      expected: set[str]) -> None:
    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    assert _changed(path) == set()
    path.write_text(SMALL.replace(old, new))
    plan = _plan(path)
    assert {s.id for s in plan.steps if s.action is Action.REPLACE} == expected
    first = next(s for s in plan.steps if s.action is Action.REPLACE)
    assert first.reason == "configuration changed"
    assert any(c.startswith("config ") and "->" in c for c in first.changes)
    for s in plan.steps:
        if s.action is Action.REPLACE and s is not first and s.id not in ("corpus.docs",):
            assert "input " in s.reason


def test_changing_a_data_file_replans_its_readers(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    (tmp_path / "eval.jsonl").write_text('{"id": "2", "question": "q?", "answer": "a"}\n')
    plan = _plan(path)
    step = plan.step("eval.expert")
    assert step.action is Action.REPLACE and step.reason == "input files changed"
    assert any(c.startswith("file eval.jsonl:") for c in step.changes)
    assert _changed(path) == {"eval.expert", "serve.default"}
    # touching a file without changing its content changes nothing
    (tmp_path / "sft.jsonl").write_text((tmp_path / "sft.jsonl").read_text())
    assert "dataset.qa" not in _changed(path)


def test_backend_version_enters_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    from sdk.backends.testing import TestBackend

    monkeypatch.setattr(TestBackend, "version", "2")
    plan = _plan(path)
    assert all(s.action is Action.REPLACE for s in plan.steps)
    assert "backend changed" in plan.step("corpus.docs").reason


def test_target_and_replace(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    plan = _plan(path, target=["finetune.sip"])
    assert {s.id for s in plan.steps} == {"base_model.tiny", "corpus.docs", "dataset.qa", "pretrain.base", "finetune.sip"}
    sdk.apply(load(path), backend="test")
    plan = _plan(path, replace=["rag.docs"])
    assert plan.step("rag.docs").action is Action.REPLACE and plan.step("rag.docs").reason == "forced by --replace"
    # its dependents wait for what it produces: planned ~, kept by apply when it produced the same output
    assert plan.step("eval.expert").reason == "input rag.docs will change"
    result = sdk.apply(load(path), backend="test", replace=["rag.docs"])
    assert result.ran == ["rag.docs"]
    assert {o.id for o in result.outcomes if o.status == "up_to_date"} >= {"eval.expert", "serve.default"}
    with pytest.raises(DslError, match="did you mean 'rag.docs'"):
        _plan(path, target=["rag.doc"])


def test_removed_block_is_planned_for_deletion(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    path.write_text(SMALL.replace("  serve {\n    port = 8123\n  }\n", ""))
    plan = _plan(path)
    assert plan.step("serve.default").action is Action.DELETE


def test_plan_json_round_trip(tmp_path: Path) -> None:
    plan = _plan(write_small(tmp_path))
    again = Plan.loads(plan.dumps())
    assert [s.to_json(full=True) for s in again.steps] == [s.to_json(full=True) for s in plan.steps]
    row = plan.to_json()["steps"][0]
    assert set(row) >= {"id", "kind", "backend", "action", "fingerprint", "depends_on", "reason"}


def test_secrets_never_enter_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENERAL_KEY", "sk-very-secret")
    recipe = SMALL.replace('    domain = rag.docs\n',
                           '    domain = rag.docs\n    general = endpoint { url = "http://127.0.0.1:9/v1", model = "g", api_key = env("GENERAL_KEY") }\n')
    path = write_small(tmp_path, recipe)
    plan = _plan(path)
    assert "sk-very-secret" not in plan.dumps()
    sdk.apply(load(path), backend="test")
    for f in (tmp_path / ".dsl").rglob("*"):
        if f.is_file():
            assert b"sk-very-secret" not in f.read_bytes(), f
