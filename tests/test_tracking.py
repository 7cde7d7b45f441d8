"""MLflow tracking (sdk.tracking), read back with MLflow's own client: an apply that ran something is a run with a
nested run per step (params, curves, eval metrics with CI bounds, tags, artifacts), a no-op apply logs nothing, a
secret's value never reaches MLflow, a real `mlflow server` receives the run, and a server that is down is a
warning with the run kept in the workdir's store. Test backend and tiny recipes; the suite turns tracking off
(tests/conftest.py), these tests turn it on."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk import events as EV
from sdk import tracking
from sdk import tracking_store as TS
from sdk.state import StateStore
from tests._specs import SMALL, write_small
from tests.conftest import run_dsl

MARKER = "MARKER-7f3a9c41"  # the value of a secret: it must appear nowhere in MLflow
SECRET_EVAL = SMALL.replace(
    "systems = [pretrain.base, finetune.sip, rag.docs]",
    'systems = [pretrain.base, finetune.sip, rag.docs, endpoint { url = "http://127.0.0.1:9/v1", '
    f'model = "m-{MARKER}", api_key = env("DSL_TEST_TRACKING_KEY") }}]')


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSL_TRACKING", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DSL_TEST_TRACKING_KEY", MARKER)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str = "demo") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_apply_is_an_mlflow_run_with_a_nested_run_per_step(tmp_path: Path, tracked: None) -> None:
    path = write_small(tmp_path, SECRET_EVAL)
    result = sdk.apply(load(path), backend="test")
    wd = tmp_path / ".dsl" / "demo"
    client = _client(tracking.local_uri(wd))
    runs = _runs(client)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["dsl.step"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == sorted(result.ran) and len(runs) == len(result.ran) + 1
    (logged,) = EV.list_runs(wd)
    assert parent.data.tags["dsl.run_id"] == logged["run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["dsl.recipe"] == str(tmp_path.resolve())  # from the SDK: the recipe's folder

    state = StateStore(wd).load()
    sip = children["finetune.sip"]
    assert sip.data.params["lora.rank"] == "4" and sip.data.params["max_steps"] == "2"  # the applied configuration
    assert sip.data.tags["dsl.fingerprint"] == state.steps["finetune.sip"]["fingerprint"]
    assert sip.data.tags["dsl.backend"] == "test" and sip.data.tags["dsl.backend_version"] == "1"
    assert sip.data.tags["dsl.inputs"] == "dataset.qa,pretrain.base"
    assert "base_model.tiny" in sip.data.tags["dsl.lineage"].split(",")
    assert sip.data.metrics["train_loss"] == state.steps["finetune.sip"]["metrics"]["train_loss"]
    assert "seconds" in sip.data.metrics

    ev = children["eval.expert"]
    figures = state.steps["eval.expert"]["metrics"]["rag.docs"]["f1"]
    assert ev.data.metrics["rag.docs/f1"] == figures["value"]
    assert ev.data.metrics["rag.docs/f1/ci_low"] == figures["ci_low"]
    assert ev.data.metrics["rag.docs/f1/ci_high"] == figures["ci_high"]
    assert ev.data.tags["dsl.gate"] == "passed" and children["rag.docs"].data.tags["dsl.promoted"] == "true"
    assert [a.path for a in client.list_artifacts(ev.info.run_id)] == ["manifest.json"]

    # the secret: its name is logged, its value nowhere (it also sat in a model name and in a metric's name)
    assert "env(DSL_TEST_TRACKING_KEY)" in ev.data.params.values()
    for run in runs:
        text = json.dumps([run.data.params, run.data.tags, sorted(run.data.metrics)])
        assert MARKER not in text, run.data.tags.get("dsl.step")
    assert any("m-***" in v for v in ev.data.params.values())

    assert [r["run_id"] for r in TS.list_runs(wd)] == [logged["run_id"]]
    assert TS.store_uris(load(path), wd) == [tracking.local_uri(wd)]
    found = TS.run_curves([tracking.local_uri(wd)], logged["run_id"])  # what the run's page reads
    assert found is not None and found["mlflow_run_id"] == parent.info.run_id
    assert TS.run_curves([tracking.local_uri(wd)], "20990101T000000-abcd") is None
    again = sdk.apply(load(path), backend="test")  # a no-op apply logs nothing
    assert again.ran == [] and len(_runs(client)) == len(runs)
    sdk.apply(load(path), backend="test", replace=["eval.expert"])
    newer = TS.list_runs(wd)
    assert len(newer) == 2 and "eval.expert" in newer[0]["steps"] and "finetune.sip" not in newer[0]["steps"]


def test_tracking_off_and_bad_tracking_attributes(tmp_path: Path, tracked: None) -> None:
    recipe = SMALL.replace('description = "demo domain"', 'description = "demo domain"\n  tracking = off')
    path = write_small(tmp_path, recipe)
    assert sdk.apply(load(path), backend="test").ok
    wd = tmp_path / ".dsl" / "demo"
    assert not (wd / "mlruns").exists() and len(EV.list_runs(wd)) == 1  # the event log is always written

    for value, message in [('"ftp://host/x"', "tracking must be local, off or a tracking URI"),
                           ('"http://user:pw@host:5000"', "the tracking URI holds a password")]:
        path.write_text(SMALL.replace('description = "demo domain"',
                                      f'description = "demo domain"\n  tracking = {value}'))
        r = run_dsl("validate", str(path))
        assert r.returncode == 1 and f"recipe.dsl:4:14: error: tracking: {message}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_the_builder_takes_the_tracking_attribute_and_checks_it(tmp_path: Path) -> None:
    from sdk.builder import Domain
    from sdk.errors import SpecError

    assert Domain("demo", base_dir=tmp_path, tracking="http://127.0.0.1:5000").build().tracking == "http://127.0.0.1:5000"
    assert Domain("demo", base_dir=tmp_path).build().tracking is None  # local, the default
    with pytest.raises(SpecError, match="tracking must be local, off or a tracking URI"):
        Domain("demo", base_dir=tmp_path, tracking="ftp://x").build()


def test_a_tracking_server_is_asked_once_briefly_and_its_answer_remembered() -> None:
    """Reaching a server is one bounded attempt (a down one costs an apply one short wait, not MLflow's retries),
    and the process remembers the answer until asked afresh; a server that accepts and never answers is down
    when the attempt's time is up."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    why = tracking.reachable(uri, fresh=True)
    assert why is not None and "refused" in why.lower(), why
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Health)  # the server comes up on that port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert tracking.reachable(uri) == why  # remembered: not asked again
        assert tracking.reachable(uri + "/", fresh=True) is None  # asked afresh: it answers
        assert tracking.reachable(uri) is None
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers one
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert tracking.reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3) == "no answer in 0.3 s"
    assert tracking.reachable("sqlite:///nowhere/mlflow.db") is None  # a file store needs no server


@pytest.mark.slow
def test_a_server_that_is_down_is_a_warning_and_the_run_is_kept_locally(tmp_path: Path, tracked: None) -> None:
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    path = write_small(tmp_path, SMALL.replace('description = "demo domain"',
                                               f'description = "demo domain"\n  tracking = "{down}"'))
    r = run_dsl("apply", str(path), "--backend", "test", "--json", env={"DSL_TRACKING": "on"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True  # stdout stays the JSON document
    assert f"tracking: {down} did not take the run" in r.stderr and "recorded in the workdir's store" in r.stderr
    assert "refused" in r.stderr.lower()  # why: the one attempt to reach it was refused
    wd = tmp_path / ".dsl" / "demo"
    (parent,) = [x for x in _runs(_client(tracking.local_uri(wd))) if "mlflow.parentRunId" not in x.data.tags]
    assert parent.data.tags["dsl.meant_for"] == down and parent.data.tags["dsl.run_id"] == EV.list_runs(wd)[0]["run_id"]
    assert parent.data.tags["dsl.recipe"] == str(path.resolve())  # from the CLI: the recipe itself


@pytest.mark.slow
def test_a_real_mlflow_server_receives_the_run(tmp_path: Path, tracked: None) -> None:
    mlflow_cmd = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    if not Path(mlflow_cmd).exists():
        pytest.skip("the mlflow server command is not installed (pip install mlflow)")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([mlflow_cmd, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while tracking.reachable(uri, timeout=2, fresh=True) is not None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
            assert time.time() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        path = write_small(tmp_path / "r", SMALL.replace('description = "demo domain"',
                                                         f'description = "demo domain"\n  tracking = "{uri}"'))
        warnings: list[str] = []
        result = sdk.apply(load(path), backend="test", log=warnings.append)
        assert result.ok and not [w for w in warnings if w.startswith("tracking:")], warnings
        wd = tmp_path / "r" / ".dsl" / "demo"
        assert not (wd / "mlruns").exists()  # nothing fell back
        client = _client(uri)
        runs = _runs(client)
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert parent.data.tags["dsl.run_id"] == EV.list_runs(wd)[0]["run_id"]
        steps = {r.data.tags["dsl.step"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
        assert sorted(steps) == sorted(result.ran)
        assert [a.path for a in client.list_artifacts(steps["eval.expert"].info.run_id)] == ["manifest.json"]
        assert [r["run_id"] for r in TS.list_runs(wd, uri=uri)] == [parent.data.tags["dsl.run_id"]]
        found = TS.run_curves(TS.store_uris(load(path), wd), parent.data.tags["dsl.run_id"])  # the recipe's store
        assert found is not None and found["uri"] == uri and found["mlflow_run_id"] == parent.info.run_id
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_a_real_training_step_logs_its_loss_curve_by_step(tmp_path: Path, tracked: None) -> None:
    """Real backends, a tiny pretraining: the trainer's losses reach the event log while it trains, and MLflow as a
    curve by step; the step's model card and loss chart are artifacts, its weights are not."""
    from sdk.backends.training.common import SAMPLE_TEXT

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(SAMPLE_TEXT * 8)
    path = tmp_path / "r.dsl"
    path.write_text('''domain demo {
  base_model tiny { architecture = llama { layers = 1, hidden = 32, heads = 2, vocab = 300, context = 64 } }
  corpus docs { paths = ["corpus/*.txt"]  split = { by = word, length = 40, overlap = 0 }  dedupe = none }
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 4  batch_size = 2  block_size = 32
                  logging_steps = 1 }
}
''')
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    wd = tmp_path / ".dsl" / "demo"
    (run,) = EV.list_runs(wd)
    curve = EV.metric_series(wd, run["run_id"])["pretrain.base"]["train_loss"]
    assert [n for n, _ in curve] == [1, 2, 3, 4] and all(v > 0 for _, v in curve)
    client = _client(tracking.local_uri(wd))
    (step,) = [r for r in _runs(client) if r.data.tags.get("dsl.step") == "pretrain.base"]
    history = client.get_metric_history(step.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == sorted((n, v) for n, v in curve)
    files = {a.path for a in client.list_artifacts(step.info.run_id)} | \
        {a.path for a in client.list_artifacts(step.info.run_id, "model")}
    assert {"loss.png", "manifest.json", "model/README.md"} <= files, files
    assert not [f for f in files if f.endswith((".safetensors", ".bin"))]

    # the run's page draws the past run's curves from MLflow: with the event log's metric lines gone, they are there
    from fastapi.testclient import TestClient

    from sdk.ui import views as V
    from sdk.ui.app import create_app

    log = EV.log_path(wd, run["run_id"])
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(x for x in lines if '"event":"metric"' not in x))
    assert EV.metric_series(wd, run["run_id"]) == {}
    view = V.run_view(wd, run["run_id"], TS.store_uris(load(path), wd))
    assert view["source"]["kind"] == "mlflow" and view["source"]["mlflow_run"] == step.data.tags["mlflow.parentRunId"]
    assert view["series"]["pretrain.base"]["train_loss"] == curve
    html = TestClient(create_app(path)).get(f"/runs/{run['run_id']}").text
    assert 'data-source="mlflow"' in html and 'polyline class="curve" data-name="train_loss"' in html
    assert f"train_loss = {curve[-1][1]:.4f}" in html
    # a run the store never recorded (its event log copied under another id) is drawn from its event log, and says so
    other = "20990101T000000-abcd"
    EV.log_path(wd, other).write_text("".join(lines))
    html = TestClient(create_app(path)).get(f"/runs/{other}").text
    assert 'data-source="events"' in html and "this run is not in the tracking store" in html
    assert f"train_loss = {curve[-1][1]:.4f}" in html
