"""apply: runs steps in order with the deterministic test backend, saves state after each step, resumes after a
failure, refuses a concurrent apply, and never leaves half-written artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.errors import LockError
from sdk.state import StateStore
from tests._specs import SMALL, write_small
from tests.conftest import ROOT, run_dsl


def test_apply_then_reapply_is_a_noop(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    first = sdk.apply(load(path), backend="test")
    assert first.ok and len(first.ran) == 9
    state = StateStore(tmp_path / ".dsl" / "demo").load()
    assert all(e["status"] == "done" for e in state.steps.values())
    for step_id, entry in state.steps.items():
        assert not Path(entry["artifact"]).is_absolute()  # a workdir refers to itself relatively
        art = tmp_path / ".dsl" / "demo" / entry["artifact"]
        assert art.parent.name == step_id and art.name == entry["fingerprint"]
        manifest = json.loads((art / "manifest.json").read_text())
        assert manifest["fingerprint"] == entry["fingerprint"] and manifest["backend"] == "test"
        assert {"inputs", "files", "lineage", "metrics", "duration_s"} <= set(manifest)
    lineage = state.steps["serve.default"]["lineage"]
    assert "corpus/a.txt" in lineage["files"] and "corpus.docs" in lineage["steps"]
    second = sdk.apply(load(path), backend="test")
    assert second.ran == [] and all(o.status == "up_to_date" for o in second.outcomes)


def test_failed_step_keeps_earlier_work_and_the_next_apply_resumes(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    result = sdk.apply(load(path), backend="test", options={"test_fail": "finetune.sip"})
    assert [o.id for o in result.failed] == ["finetune.sip"]
    assert "failing on purpose" in result.failed[0].error
    state = StateStore(tmp_path / ".dsl" / "demo").load()
    assert state.steps["pretrain.base"]["status"] == "done"
    assert state.steps["finetune.sip"]["status"] == "failed"
    assert "rag.docs" not in state.steps
    assert not list((tmp_path / ".dsl" / "demo" / "artifacts").glob("*/.tmp-*"))  # nothing half-written
    plan = sdk.plan(load(path), backend="test")
    assert plan.step("pretrain.base").action.value == "noop"
    assert plan.step("finetune.sip").reason.startswith("the last run failed")
    resumed = sdk.apply(load(path), backend="test")
    assert resumed.ok and resumed.ran[0] == "finetune.sip" and "pretrain.base" not in resumed.ran


def test_failed_replacement_keeps_the_previous_artifact(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    old = StateStore(tmp_path / ".dsl" / "demo").load().steps["finetune.sip"]
    path.write_text(SMALL.replace("max_steps = 2", "max_steps = 5"))
    result = sdk.apply(load(path), backend="test", options={"test_fail": "finetune.sip"})
    assert result.failed
    entry = StateStore(tmp_path / ".dsl" / "demo").load().steps["finetune.sip"]
    assert entry["status"] == "failed" and entry["artifact"] == old["artifact"]
    assert (tmp_path / ".dsl" / "demo" / old["artifact"] / "manifest.json").is_file()


def test_a_failed_gate_withholds_the_systems_it_names_from_serving(tmp_path: Path) -> None:
    from sdk.backends.serve.serve import load_config
    from sdk.workspace import open_workspace

    path = write_small(tmp_path, SMALL.replace("gate = rag.docs.f1 >= 0", "gate = rag.docs.f1 > rag.docs.f1"))
    result = sdk.apply(load(path), backend="test")
    assert [o.id for o in result.gate_failures] == ["eval.expert"] and not result.ok
    assert "rag.docs.f1 > rag.docs.f1" in result.gate_failures[0].error
    assert not [o for o in result.outcomes if o.status == "skipped"]  # serving runs, and withholds
    ws = open_workspace(path)
    promo = ws.promotion()
    assert promo["rag.docs"]["promoted"] is False and promo["rag.docs"]["decided_by"] == ["eval.expert"]
    assert promo["finetune.sip"]["promoted"] is True  # no gate names it
    again = sdk.apply(load(path), backend="test")  # the gate stays failed; nothing re-runs
    assert again.gate_failures and not again.ran
    # with the gate passing, rag.docs is promoted: serve re-runs (the verdict it reads changed), eval too
    path.write_text(path.read_text().replace("gate = rag.docs.f1 > rag.docs.f1", "gate = rag.docs.f1 >= 0"))
    fixed = sdk.apply(load(path), backend="test")
    assert fixed.ok and set(fixed.ran) == {"eval.expert", "serve.default"}
    assert open_workspace(path).promotion()["rag.docs"]["promoted"] is True


def test_concurrent_apply_fails_at_once_with_a_lock_message(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    code = ("import sdk, sys; from dsl.parser import load; "
            f"sdk.apply(load({str(path)!r}), backend='test', options={{'test_sleep': 0.5}})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.time() + 30
        while not (tmp_path / ".dsl" / "demo" / "state.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(LockError, match="locked by another dsl apply"):
            sdk.apply(load(path), backend="test")
        assert proc.poll() is None  # refused while the other apply still runs: it did not wait for the lock
        cli = run_dsl("apply", str(path), "--backend", "test")
        assert cli.returncode == 1 and "locked by another dsl apply" in cli.stderr
    finally:
        assert proc.wait(timeout=60) == 0
    assert sdk.apply(load(path), backend="test").ok  # the lock is released afterwards


def test_cli_apply_exit_codes_and_json(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    proc = run_dsl("apply", str(path), "--backend", "test", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and len(data["steps"]) == 9
    plan = json.loads(run_dsl("plan", str(path), "--backend", "test", "--json").stdout)
    assert {s["action"] for s in plan["steps"]} == {"noop"}
    path.write_text(SMALL.replace("gate = rag.docs.f1 >= 0", "gate = rag.docs.f1 > rag.docs.f1"))
    proc = run_dsl("apply", str(path), "--backend", "test")
    assert proc.returncode == 4 and "gate" in proc.stderr and "Traceback" not in proc.stderr
    status = json.loads(run_dsl("status", str(path), "--json").stdout)
    assert {s["id"]: s["status"] for s in status["steps"]}["eval.expert"] == "gate_failed"


def test_saved_plan_is_refused_when_stale(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    saved = tmp_path / "plan.json"
    assert run_dsl("plan", str(path), "--backend", "test", "--out", str(saved)).returncode == 0
    assert run_dsl("apply", str(path), "--backend", "test", "--plan", str(saved)).returncode == 0
    proc = run_dsl("apply", str(path), "--backend", "test", "--plan", str(saved))
    assert proc.returncode == 1 and "stale" in proc.stderr


def test_custom_backend_through_the_registry(tmp_path: Path) -> None:
    from sdk.backends.base import Backend, Registry, StepResult

    class Echo(Backend):
        name, version, kinds = "echo", "7", ("corpus",)

        def run(self, ctx):  # type: ignore[no-untyped-def]
            (ctx.out_dir / "echo.txt").write_text(ctx.step_id)
            return StepResult(metrics={"n": 1}, outputs={"chunks": "echo.txt"}, summary="echoed")

    registry = Registry()
    registry.register("echo", Echo)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("echo", Echo)
    spec = sdk.Domain("d", base_dir=tmp_path).corpus("c", paths=["*.txt"], backend="echo").build(check_files=False)
    (tmp_path / "a.txt").write_text("x")
    result = sdk.apply(spec, registry=registry)
    assert result.ok
    entry = StateStore(tmp_path / ".dsl" / "d").load().steps["corpus.c"]
    assert entry["backend_version"] == "7" and (tmp_path / ".dsl" / "d" / entry["artifact"] / "echo.txt").read_text() == "corpus.c"


def test_unknown_backend_is_a_clear_error(tmp_path: Path) -> None:
    from sdk.errors import DslError

    spec = sdk.Domain("d", base_dir=tmp_path).corpus("c", paths=["x"], backend="nope").build(check_files=False)
    with pytest.raises(DslError, match="unknown backend 'nope'"):
        sdk.plan(spec)
