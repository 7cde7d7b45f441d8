"""The apply event log (sdk.events): what the executor writes for each apply that runs something, read back the way
`dsl ui` reads it (list_runs, read_events with offsets, metric_series); training jobs' loss lines; torn lines,
unknown ids, concurrent writers. Test backend only: cheap."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import sdk
from dsl.parser import load
from sdk import events as EV
from sdk.state import StateStore
from tests._specs import write_small


def _workdir(tmp_path: Path) -> Path:
    return tmp_path / ".dsl" / "demo"


def test_an_apply_writes_its_run_and_a_noop_apply_writes_none(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    result = sdk.apply(load(path), backend="test")
    wd = _workdir(tmp_path)
    runs = EV.list_runs(wd)
    assert len(runs) == 1 and runs[0]["ok"] is True and runs[0]["status"] == "succeeded"
    assert runs[0]["steps"] == result.ran and runs[0]["finished"] >= runs[0]["started"]
    assert runs[0]["domain"] == "demo"
    events, offset = EV.read_events(wd, runs[0]["run_id"])
    assert offset == (wd / "runs" / f"{runs[0]['run_id']}.jsonl").stat().st_size
    assert [e["event"] for e in events][0] == "run_started" and events[-1]["event"] == "run_finished"
    assert [p["id"] for p in events[0]["data"]["plan"]] == [s.id for s in result.plan.steps]
    state = StateStore(wd).load()
    finished = {e["step"]: e["data"] for e in events if e["event"] == "step_finished"}
    assert set(finished) == set(result.ran)
    for step_id, data in finished.items():
        assert data["status"] == "done" and data["fingerprint"] == state.steps[step_id]["fingerprint"]
    started = [e["step"] for e in events if e["event"] == "step_started"]
    assert started == result.ran
    assert all(e["run"] == runs[0]["run_id"] for e in events)
    assert EV.read_events(wd, runs[0]["run_id"], offset) == ([], offset)  # nothing new: a live reader waits

    again = sdk.apply(load(path), backend="test")
    assert again.ran == [] and len(EV.list_runs(wd)) == 1


def test_a_failed_step_and_an_interrupted_apply_are_recorded(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    result = sdk.apply(load(path), backend="test", options={"test_fail": "finetune.sip"})
    wd = _workdir(tmp_path)
    (failed,) = EV.list_runs(wd)
    assert failed["ok"] is False and failed["status"] == "failed" and "finetune.sip" not in failed["steps"]
    events, _ = EV.read_events(wd, failed["run_id"])
    last = [e for e in events if e["event"] == "step_finished"][-1]
    assert last["step"] == "finetune.sip" and last["data"]["status"] == "failed"
    assert "failing on purpose" in last["data"]["error"] and result.failed

    def stop(step, event):  # Ctrl-C as the second step to run starts
        if event == "start" and step.id == "rag.docs":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sdk.apply(load(path), backend="test", on_step=stop)
    newest = EV.list_runs(wd)[0]
    assert newest["run_id"] != failed["run_id"] and newest["ok"] is False
    events, _ = EV.read_events(wd, newest["run_id"])
    assert events[-1]["event"] == "run_finished" and events[-1]["data"]["interrupted"] is True
    assert [e["step"] for e in events if e["event"] == "step_finished"] == ["finetune.sip"]


def test_a_run_without_its_last_line_is_running_while_its_process_lives(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    alive, dead = "20261205T091500-aaaa", "20261205T091400-bbbb"
    EV.append_event(EV.log_path(wd, alive), alive, "run_started", None, {"domain": "d", "plan": [], "pid": os.getpid()})
    EV.append_event(EV.log_path(wd, alive), alive, "step_finished", "corpus.docs", {"status": "done"})
    EV.append_event(EV.log_path(wd, dead), dead, "run_started", None, {"domain": "d", "plan": [], "pid": 2**22 + 17})
    rows = EV.list_runs(wd)
    assert [r["run_id"] for r in rows] == [alive, dead]  # newest first
    assert rows[0]["status"] == "running" and rows[0]["finished"] is None and rows[0]["steps"] == ["corpus.docs"]
    assert rows[1]["status"] == "interrupted" and rows[1]["ok"] is None
    assert EV.list_runs(wd, limit=1) == rows[:1]


def test_a_line_being_written_is_read_whole_on_the_next_call(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    run_id = "20261205T091500-abcd"
    path = EV.log_path(wd, run_id)
    EV.append_event(path, run_id, "run_started", None, {"domain": "d", "plan": []})
    line = json.dumps({"time": 1.0, "run": run_id, "event": "metric", "step": "pretrain.base",
                       "data": {"name": "train_loss", "value": 2.5, "step": 3}}) + "\n"
    with open(path, "a") as f:
        f.write(line[:20])  # half a line, as a reader may find it mid-write
    events, offset = EV.read_events(wd, run_id)
    assert [e["event"] for e in events] == ["run_started"]
    with open(path, "a") as f:
        f.write(line[20:] + "not json\n")
    more, offset2 = EV.read_events(wd, run_id, offset)
    assert [e["event"] for e in more] == ["metric"] and offset2 == path.stat().st_size  # the junk line is skipped
    assert EV.metric_series(wd, run_id) == {"pretrain.base": {"train_loss": [[3, 2.5]]}}


def test_run_ids_made_in_one_second_sort_by_start() -> None:
    t = 1764925500.0
    ids = [EV.new_run_id(t + k / 1000) for k in (0, 1, 2, 999)]
    assert all(EV.RUN_ID.match(i) for i in ids) and sorted(ids) == ids  # the random part never reorders them
    assert len({EV.new_run_id(t) for _ in range(50)}) > 1  # and two in the same millisecond still differ


@pytest.mark.parametrize("bad", ["../state", "20261205T091500-abcd/../../x", "", "nope"])
def test_unknown_or_malformed_run_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(EV.UnknownRun):
        EV.read_events(tmp_path, bad)
    with pytest.raises(EV.UnknownRun, match="no run"):
        EV.read_events(tmp_path, "20261205T091500-abcd")


def test_the_log_is_never_a_link(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "runs").mkdir(parents=True)
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    run_id = "20261205T091500-abcd"
    (wd / "runs" / f"{run_id}.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        EV.append_event(EV.log_path(wd, run_id), run_id, "run_started")
    assert target.read_text() == "keep\n"
    with pytest.raises(EV.UnknownRun):
        EV.read_events(wd, run_id)


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    run_id = "20261205T091500-abcd"
    path = EV.log_path(tmp_path, run_id)
    log = EV.job_logger(json.dumps({"path": str(path), "run": run_id, "step": "finetune.sip"}))
    assert log is not None

    def write(k: int) -> None:
        for i in range(100):
            log(f"loss_{k}", i * 0.5, i)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    series = EV.metric_series(tmp_path, run_id)["finetune.sip"]
    assert sorted(series) == [f"loss_{k}" for k in range(4)]
    assert all(len(points) == 100 for points in series.values())
    assert len(path.read_text().splitlines()) == 400


def test_the_training_callback_appends_its_losses_to_the_running_apply(tmp_path: Path, monkeypatch) -> None:
    from sdk.backends.training.common import progress_callback

    run_id = "20261205T091500-abcd"
    path = EV.log_path(tmp_path, run_id)
    monkeypatch.setenv(EV.EVENTS_ENV, json.dumps({"path": str(path), "run": run_id, "step": "finetune.sip"}))
    callback = progress_callback(None, "fine-tuning", 10)
    state = SimpleNamespace(global_step=5)
    callback.on_log(None, state, None, logs={"loss": 1.5, "grad_norm": 0.25, "epoch": 0.5})
    state.global_step = 10
    callback.on_log(None, state, None, logs={"eval_loss": 2.0, "eval_runtime": 0.1})
    series = EV.metric_series(tmp_path, run_id)["finetune.sip"]
    assert series == {"train_loss": [[5, 1.5]], "grad_norm": [[5, 0.25]], "eval_loss": [[10, 2.0]]}

    monkeypatch.setenv("RANK", "1")  # another rank of a launched run writes nothing
    progress_callback(None, "fine-tuning", 10).on_log(None, state, None, logs={"loss": 9.0})
    assert EV.metric_series(tmp_path, run_id)["finetune.sip"]["train_loss"] == [[5, 1.5]]


def test_two_runs_compare_from_their_own_records_after_the_older_artifact_is_gone(tmp_path: Path) -> None:
    """Each run's log keeps the configuration and figures of the steps it ran, so comparing an older run with a
    newer one still shows the configuration diff once the newer run replaced (and pruned) the older artifact."""
    from sdk.ui.views import compare_view

    path = write_small(tmp_path)
    sdk.apply(load(path), backend="test")
    path.write_text(path.read_text().replace("max_steps = 2", "max_steps = 5"))
    sdk.apply(load(path), backend="test")
    wd = _workdir(tmp_path)
    old, new = sorted(EV.list_runs(wd), key=lambda r: r["started"])
    first = {e["step"]: e["data"] for e in EV.read_events(wd, old["run_id"])[0] if e["event"] == "step_finished"}
    assert not (wd / "artifacts" / "finetune.sip" / first["finetune.sip"]["fingerprint"]).exists()  # pruned
    rows = {r["id"]: r for r in compare_view(wd, old["run_id"], new["run_id"])["rows"]}
    sip = rows["finetune.sip"]
    assert sip["config_known"] and not sip["same"]
    assert any("max_steps" in str(c) and "2" in str(c) and "5" in str(c) for c in sip["changes"]), sip["changes"]
    started = [e for e in EV.read_events(wd, new["run_id"])[0] if e["event"] == "step_started"]
    assert all(isinstance(e["data"].get("config"), dict) for e in started)
