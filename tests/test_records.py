"""Typed records (sdk/records/): each round-trips through its one load/save place, a damaged file is one error
naming the file and the field, the serve defaults are stated once (in ServeConfig), and the two gateway timeouts
that were read but never written are now written by the serve step and honoured by the gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from sdk.errors import DslError
from sdk.records.eval import load_eval, save_eval
from sdk.records.job import check_job, load_job, save_job
from sdk.records.manifest import manifest_text, parse_manifest
from sdk.records.serve import SETTINGS, ServeConfig, load_serve, save_serve, serve_config
from sdk.records.state import Status
from sdk.state import State, StateStore
from tests.conftest import ROOT

ENTRY = {"status": "done", "fingerprint": "f" * 64, "backend": "test", "backend_version": "1", "config": {"a": 1},
         "files": {}, "inputs": {}, "facets": {"content": "x"}, "artifact": "artifacts/a.b/ff", "metrics": {"m": 0.5},
         "summary": "ok", "manifest_sha256": "0" * 64, "lineage": {"steps": [], "files": {}}, "started_at": 1.0,
         "finished_at": 2.5, "duration_s": 1.5, "state_version": 2, "written_by_a_later_release": [1]}
SUMMARY = {"step": "eval.expert", "task": "qa", "n_items": 2, "systems": ["rag.docs"],
           "metrics": {"rag.docs": {"exact_match": {"value": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 2}}},
           "comparisons": {}, "contamination": {"checked": False}, "bootstrap": 100, "confidence": 0.95, "seed": 0,
           "gate": {"expression": "rag.docs.exact_match >= 0.5", "passed": True, "detail": "0.5 >= 0.5"},
           "human": {"status": "a section of a later feature, kept"}}
JOB = {"kind": "finetune", "step_id": "finetune.sip", "out_dir": "/o", "checkpoint_dir": "/c", "block": {"lr": 1e-4},
       "base": {"model": "/m", "adapter": None, "tokenizer": None, "revision": None}, "data_hashes": {},
       "train": "/t.jsonl", "chat_template": None}
MANIFEST = {"step": "a.b", "status": "done", "outputs": {"model": "model"},
            "written": {"model/w.bin": {"size": 3, "sha256": "ab"}},
            "inputs": {"c.d": {"fingerprint": "f", "artifact": "artifacts/c.d/f", "digest": "d",
                               "manifest_sha256": None}},
            "plugin_note": {"kept": True}}


def test_state_round_trips_with_its_status_enum(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(State(domain="demo", steps={"a.b": dict(ENTRY)}, hashes={"x.txt": [1, 2.0, "h"]}))
    loaded = store.load()
    assert loaded.steps == {"a.b": ENTRY} and loaded.serial == 1 and loaded.domain == "demo"
    assert loaded.steps["a.b"]["status"] == Status.DONE.value and set(Status.finished()) == {"done", "gate_failed"}


def test_a_state_entry_of_ours_with_a_bad_value_is_never_saved(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="status"):
        StateStore(tmp_path).save(State(steps={"a.b": {**ENTRY, "status": "finished"}}))
    assert not (tmp_path / "state.json").exists()


def test_serve_config_round_trips_and_keeps_an_engine_section(tmp_path: Path) -> None:
    config = ServeConfig.model_validate({"domain": "d", "header_timeout": 2.0, "variants": {"m": {"type": "model"}},
                                         "sglang": {"port": 31000}})
    path = save_serve(config, tmp_path)
    on_disk = json.loads(path.read_text())
    assert set(SETTINGS) <= set(on_disk) and on_disk["sglang"] == {"port": 31000}  # every setting written
    assert load_serve(path) == config


def test_eval_result_and_training_job_and_manifest_round_trip(tmp_path: Path) -> None:
    assert load_eval(save_eval(dict(SUMMARY), tmp_path)) == SUMMARY
    assert load_job(save_job(dict(JOB), tmp_path)) == JOB
    data, problem = parse_manifest(manifest_text(MANIFEST).encode())
    assert problem is None and data == MANIFEST  # a plugin's extra key is kept


def _state(p: Path) -> None:
    StateStore(p.parent).load()


def _serve(p: Path) -> None:
    load_serve(p)


def _eval(p: Path) -> None:
    load_eval(p, "eval.expert")


def _job(p: Path) -> None:
    load_job(p)


GOOD: dict[str, tuple[str, dict[str, Any], Callable[[Path], None]]] = {
    "state": ("state.json", {"version": 2, "lineage": "x", "serial": 1, "steps": {"a.b": ENTRY}, "hashes": {}}, _state),
    "serve": ("serve.json", {"variants": {}, "timeout": 5.0}, _serve),
    "eval": ("summary.json", SUMMARY, _eval),
    "job": ("job.json", JOB, _job),
}
# (record, how it is damaged, the damage, what the error must name)
DAMAGE = [
    ("state", "wrong type", ("steps", "a.b", "status"), 3, "steps.a.b.status"),
    ("state", "missing field", ("serial",), None, "serial is missing"),
    ("serve", "wrong type", ("timeout",), "soon", "timeout"),
    ("serve", "wrong type", ("variants",), [], "variants"),
    ("eval", "missing field", ("systems",), None, "systems is missing"),
    ("eval", "wrong type", ("gate", "passed"), "yes", "gate.passed"),
    ("job", "missing field", ("step_id",), None, "step_id is missing"),
    ("job", "wrong type", ("base", "model"), 5, "base.model"),
]


@pytest.mark.parametrize("record", sorted(GOOD))
def test_a_truncated_record_names_its_file_line_and_column(tmp_path: Path, record: str) -> None:
    name, data, load = GOOD[record]
    path = tmp_path / name
    text = json.dumps(data, indent=2)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DslError) as e:
        load(path)
    assert re.match(re.escape(str(path)) + r":\d+:\d+: .* is not valid JSON", str(e.value)), str(e.value)


@pytest.mark.parametrize("record,how,at,value,named", DAMAGE, ids=[f"{d[0]}-{d[1]}-{d[4]}" for d in DAMAGE])
def test_a_damaged_record_names_its_file_and_field(tmp_path: Path, record: str, how: str, at: tuple[str, ...],
                                                   value: Any, named: str) -> None:
    name, good, load = GOOD[record]
    data = json.loads(json.dumps(good))
    where = data
    for key in at[:-1]:
        where = where[key]
    if how == "missing field":
        del where[at[-1]]
    else:
        where[at[-1]] = value
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(DslError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: ") and named in str(e.value) and "damaged" in str(e.value), str(e.value)


def test_a_damaged_manifest_names_the_field() -> None:
    bad = {**MANIFEST, "written": {"model/w.bin": {"size": "3", "sha256": "ab"}}}
    data, problem = parse_manifest(json.dumps(bad).encode())
    assert data is None and problem is not None and "written.model/w.bin.size" in problem
    assert "unreadable" in (parse_manifest(b'{"outputs": {')[1] or "")


def test_a_malformed_training_job_is_named_before_it_runs() -> None:
    with pytest.raises(DslError, match="finetune.sip: its training job is malformed .*out_dir is missing"):
        check_job({k: v for k, v in JOB.items() if k != "out_dir"})


# ---------------------------------------------------------------------------------------- serve defaults, once


def test_the_serve_block_and_the_gateway_take_their_defaults_from_serve_config() -> None:
    from sdk.serving.gateway import Gateway
    from sdk.spec.blocks.serve import ServeBlock

    block, defaults = ServeBlock(), ServeConfig()
    for name in SETTINGS:
        assert getattr(block, name) == getattr(defaults, name), name
        assert ServeBlock.model_fields[name].description == ServeConfig.model_fields[name].description, name
    config = Gateway({"variants": {}}, preload=False).config
    assert {k: config[k] for k in SETTINGS} == {k: getattr(defaults, k) for k in SETTINGS}
    assert serve_config({"variants": {}, "max_tokens": 7})["max_tokens"] == 7


def test_no_reader_restates_a_serve_default() -> None:
    """``config.get("timeout", 60)`` and the like: a serve setting read with a default of its own."""
    pattern = re.compile(r"""\.get\(\s*["'](%s)["']\s*,""" % "|".join(SETTINGS))
    files = [*(ROOT / "sdk" / "serving").rglob("*.py"), ROOT / "sdk" / "backends" / "serve" / "serve.py",
             *(ROOT / "dsl" / "commands").glob("serve*.py")]
    found = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not found, f"restated serve defaults: {found}"


def test_header_and_body_timeouts_are_written_by_the_serve_step_and_honoured(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from dsl.parser import load
    from sdk.backends.base import Artifact, StepContext
    from sdk.backends.serve.serve import ServeBackend, load_config
    from sdk.progress import Progress
    from sdk.serving import app as gateway_app
    from sdk.serving.asgi import Guard
    from sdk.serving.gateway import Gateway

    (tmp_path / "r.dsl").write_text("domain d {\n  serve { header_timeout = 2.5  body_timeout = 4 }\n}\n")
    spec = load(tmp_path / "r.dsl")
    out = tmp_path / "artifacts" / "serve.default" / "f"
    out.mkdir(parents=True)
    ctx = StepContext(spec=spec, step_id="serve.default", kind="serve", label="default", block=spec.serve["default"],
                      fingerprint="f", out_dir=out, workdir=tmp_path, checkpoint_dir=tmp_path / "c", inputs={},
                      progress=Progress(enabled=False), log=lambda _: None, options={})
    result = ServeBackend().run(ctx)
    written = json.loads((out / "serve.json").read_text())
    assert written["header_timeout"] == 2.5 and written["body_timeout"] == 4.0
    config = load_config(Artifact("serve.default", out, {"outputs": result.outputs}))
    gateway = Gateway(config, preload=False)
    guard = next(m for m in gateway_app.create_app(gateway).user_middleware if m.cls is Guard)
    assert guard.kwargs["body_timeout"] == 4.0  # a body not read within it gets 408
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.update(config=self.config))
    gateway_app.serve(gateway, "127.0.0.1", 8000)
    protocol = seen["config"].http
    assert protocol.header_timeout == 2.5 and protocol.body_timeout == 4.0  # the connection timers
