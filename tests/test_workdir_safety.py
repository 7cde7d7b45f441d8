"""A workdir is data: relative, movable, confined, checked for damage, never a reason to run code or to touch
anything outside itself. Each scenario runs the real `dsl` command (or the SDK) on real folders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.errors import DslError
from sdk.state import StateStore, inside, remove_inside
from tests._specs import SMALL, write_small
from tests.conftest import ROOT, run_dsl


def _applied(tmp_path: Path, recipe: str = SMALL) -> Path:
    path = write_small(tmp_path, recipe)
    assert sdk.apply(load(path), backend="test").ok
    return path


# ------------------------------------------------------------------------------------------- relative state


def test_a_copied_workdir_never_touches_the_original(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    wd, copy = tmp_path / ".dsl" / "demo", tmp_path / "copy"
    shutil.copytree(wd, copy, symlinks=True)
    state = json.loads((wd / "state.json").read_text())
    assert all(not Path(e["artifact"]).is_absolute() for e in state["steps"].values())
    for f in wd.rglob("*.json"):  # no manifest, state or output names the workdir's absolute path
        assert str(wd.resolve()) not in f.read_text(), f
    original_route = next((wd / "artifacts" / "route.default").iterdir())
    r = run_dsl("apply", str(path), "--workdir", str(copy), "--backend", "test", "--replace", "route.default")
    assert r.returncode == 0, r.stderr
    assert original_route.is_dir() and (original_route / "manifest.json").is_file()
    assert json.loads((wd / "state.json").read_text()) == state  # the original's state is untouched


def test_a_moved_workdir_read_from_another_directory_is_up_to_date(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    moved = tmp_path / "elsewhere" / "wd"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / ".dsl" / "demo"), moved)
    r = run_dsl("plan", str(path), "--workdir", "wd", "--backend", "test", cwd=moved.parent)
    assert r.returncode == 0 and "No changes" in r.stdout, r.stdout + r.stderr


def test_serve_json_names_workdir_paths_relatively(tmp_path: Path) -> None:
    from sdk.backends.serve.serve import _absolute, _relative

    wd = (tmp_path / "wd").resolve()
    (wd / "artifacts" / "route.default" / "fp").mkdir(parents=True)
    config = {"router": str(wd / "artifacts" / "route.default" / "fp"), "variants": {"m": {"model": "/models/x"}}}
    saved = _relative(config, wd)
    assert saved["router"] == "$WORKDIR/artifacts/route.default/fp" and saved["variants"]["m"]["model"] == "/models/x"
    moved = (tmp_path / "moved").resolve()
    shutil.move(str(wd), moved)
    assert _absolute(saved, moved)["router"] == str(moved / "artifacts" / "route.default" / "fp")
    with pytest.raises(DslError, match="outside the workdir"):
        _absolute({"router": "$WORKDIR/../../etc"}, moved)


# --------------------------------------------------------------------------------------------- confinement


@pytest.mark.parametrize("recorded", ["ABSOLUTE", "../outside/fp", "artifacts/../../outside/fp", "artifacts/link/fp"])
def test_state_can_never_make_apply_delete_outside_the_workdir(tmp_path: Path, recorded: str) -> None:
    path = _applied(tmp_path)
    outside = tmp_path / "outside" / "fp"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    (tmp_path / ".dsl" / "demo" / "artifacts" / "link").symlink_to(tmp_path / "outside")
    state_file = tmp_path / ".dsl" / "demo" / "state.json"
    data = json.loads(state_file.read_text())
    data["steps"]["rag.gone"] = {**data["steps"]["rag.docs"], "artifact": recorded.replace("ABSOLUTE", str(outside))}
    state_file.write_text(json.dumps(data))
    result = sdk.apply(load(path), backend="test")
    assert "rag.gone" not in StateStore(tmp_path / ".dsl" / "demo").load().steps  # the step left the recipe
    assert (outside / "keep.txt").read_text() == "mine"
    assert result.ok


def test_every_delete_refuses_paths_outside_the_artifacts(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "artifacts" / "s" / "fp").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (wd / "artifacts" / "esc").symlink_to(victim)
    for p in (victim, wd, wd / "artifacts", wd / "artifacts" / "esc", wd / "artifacts" / ".." / ".." / "victim",
              Path("/")):
        assert remove_inside(wd, p) is False
    assert victim.is_dir() and (wd / "artifacts").is_dir()
    assert inside(wd, "/abs") is None and inside(wd, "artifacts/../..") is None and inside(wd, "artifacts/esc") is None
    assert remove_inside(wd, wd / "artifacts" / "s" / "fp") is True and not (wd / "artifacts" / "s" / "fp").exists()


def _recipe_with(tmp_path: Path, corpus: str, extra: str = "") -> Path:
    (tmp_path / "r").mkdir(exist_ok=True)
    path = tmp_path / "r" / "r.dsl"
    path.write_text(f'domain d {{\n{extra}  corpus c {{\n    paths = [{corpus}]\n  }}\n}}\n')
    return path


def test_corpus_globs_stay_inside_the_recipes_folder_unless_roots_allow(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.md").write_text("# secret\n")
    for pattern in ('"../outside/*.md"', f'"{tmp_path}/outside/*.md"', '"/**/*.md"'):
        path = _recipe_with(tmp_path, pattern)
        started = time.time()
        r = run_dsl("validate", str(path))
        assert r.returncode == 1 and "outside" in r.stderr and "roots" in r.stderr, r.stderr
        assert "r.dsl:3:" in r.stderr and "Traceback" not in r.stderr
        assert time.time() - started < 30  # refused before walking a disk
    (tmp_path / "r" / "docs").mkdir()
    (tmp_path / "r" / "docs" / "link.md").symlink_to(tmp_path / "outside" / "secret.md")
    r = run_dsl("validate", str(_recipe_with(tmp_path, '"docs/*.md"')))
    assert r.returncode == 1 and "leads outside" in r.stderr, r.stderr
    allowed = _recipe_with(tmp_path, '"../outside/*.md"', '  roots = ["../outside"]\n')
    assert run_dsl("validate", str(allowed)).returncode == 0


def test_only_regular_files_of_bounded_size_are_read(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    os.mkfifo(tmp_path / "r" / "fifo.jsonl")
    recipe = tmp_path / "r" / "r.dsl"
    for data, message in (("fifo.jsonl", "not a regular file"), ("/dev/zero", "outside")):
        recipe.write_text(f'domain d {{\n  dataset qa {{\n    path = "{data}"\n  }}\n}}\n')
        r = run_dsl("validate", str(recipe), timeout=30)
        assert r.returncode == 1 and message in r.stderr and "r.dsl:3:12" in r.stderr, r.stderr
    (tmp_path / "r" / "big.jsonl").write_text("x" * 3_000_000)
    recipe.write_text('domain d {\n  max_file_mb = 1\n  dataset qa {\n    path = "big.jsonl"\n  }\n}\n')
    r = run_dsl("validate", str(recipe))
    assert r.returncode == 1 and "over the limit of 1 MiB" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- integrity


def test_damaged_artifacts_are_replanned_and_named(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    wd = tmp_path / ".dsl" / "demo"
    out = next((wd / "artifacts" / "corpus.docs").glob("*/out.json"))
    out.write_text(out.read_text()[:-5])
    manifest = next((wd / "artifacts" / "route.default").glob("*/manifest.json"))
    manifest.write_text("{ not json")
    r = run_dsl("plan", str(path), "--backend", "test")
    assert "artifact damaged: out.json size differs" in r.stdout, r.stdout
    assert "artifact damaged: manifest.json is unreadable" in r.stdout
    v = run_dsl("verify", str(path), "--json")
    report = json.loads(v.stdout)
    assert v.returncode == 1 and report["damaged"] == 2
    assert {r["step"] for r in report["steps"] if not r["ok"]} == {"corpus.docs", "route.default"}
    assert sdk.apply(load(path), backend="test").ok
    assert run_dsl("verify", str(path)).returncode == 0


def test_same_size_corruption_is_found_by_verify(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    out = next((tmp_path / ".dsl" / "demo" / "artifacts" / "dataset.qa").glob("*/out.json"))
    text = out.read_text()
    out.write_text(text.replace("dataset", "DATASET"))
    v = run_dsl("verify", str(path))
    assert v.returncode == 1 and "out.json content differs" in v.stdout


# --------------------------------------------------------------------------------------- artifacts are data


def test_a_manifest_cannot_turn_on_remote_code(tmp_path: Path) -> None:
    from sdk.artifacts import Artifact
    from sdk.backends.models import handle, load as load_model, recipe_trusts
    from tests._tiny import tiny_model_dir

    model = tiny_model_dir(tmp_path / "m")
    marker = tmp_path / "EXPLOITED"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import "
                                   "LlamaForCausalLM as EvilModel, LlamaConfig as EvilConfig\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    art = Artifact("base_model.m", tmp_path, {"outputs": {"model": str(model), "model_source": "local",
                                                          "trust_remote_code": True}})
    h = handle(art)
    assert h.trust_remote_code is False
    load_model(h)
    assert not marker.exists()
    spec = sdk.Domain("d", base_dir=tmp_path).base_model("m", path="m").build(check_files=False)
    assert recipe_trusts(spec, "base_model.m") is False


# ------------------------------------------------------------------------------------- state and disk faults


@pytest.mark.parametrize("bad,where", [('{"lineage": "x", "serial": 1, "steps": {"a.b": 3}}', "steps.a.b"),
                                       ('[1, 2]', "top level"),
                                       ('{"lineage": "x", "serial": "one", "steps": {}}', "serial"),
                                       ('{"version": 2, "lineage": "x", "serial": 1, "steps": {"a.b": {"artifact": 5}}}',
                                        "steps.a.b.artifact")])
def test_a_state_file_of_the_wrong_structure_is_one_clear_line(tmp_path: Path, bad: str, where: str) -> None:
    path = write_small(tmp_path)
    (tmp_path / ".dsl" / "demo").mkdir(parents=True)
    (tmp_path / ".dsl" / "demo" / "state.json").write_text(bad)
    r = run_dsl("plan", str(path), "--backend", "test")
    assert r.returncode == 1 and where in r.stderr and "Traceback" not in r.stderr and "internal" not in r.stderr


def test_a_full_disk_is_one_clear_line(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs mount privileges)")
    try:
        path = write_small(tmp_path)
        (mnt / "filler").write_bytes(b"x" * 60_000)
        r = run_dsl("apply", str(path), "--workdir", str(mnt / "wd"), "--backend", "test")
        assert r.returncode == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        assert "space" in r.stderr or "disk" in r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_kill_9_at_random_points_leaves_a_valid_resumable_state(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    code = ("import sdk; from dsl.parser import load; "
            f"sdk.apply(load({str(path)!r}), backend='test', options={{'test_sleep': 0.05}})")
    rng = random.Random(7)
    for trial in range(20):
        if trial % 5 == 0:  # now and then, start over with changes to re-run
            path.write_text(SMALL.replace("max_steps = 2", f"max_steps = {2 + trial}"))
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        time.sleep(rng.uniform(0.2, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        StateStore(tmp_path / ".dsl" / "demo").load()  # always readable
    result = sdk.apply(load(path), backend="test")
    assert result.ok
    assert not list((tmp_path / ".dsl" / "demo" / "artifacts").glob("*/.tmp-*"))  # leftovers removed at the start
    assert not list((tmp_path / ".dsl" / "demo").glob(".state.json.*")), "a half-written state file was left"
    assert not sdk.plan(load(path), tmp_path / ".dsl" / "demo", backend="test").pending


def test_serve_names_a_damaged_artifact_by_its_file(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    router_out = next((tmp_path / ".dsl" / "demo" / "artifacts" / "route.default").glob("*/out.json"))
    router_out.write_bytes(b"\x80garbage")
    r = run_dsl("serve", str(path), "--no-auth", timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "the artifact of route.default" in r.stderr and "out.json size differs" in r.stderr, r.stderr


def test_a_version_1_workdir_is_migrated_and_says_why_its_dependents_rerun_once(tmp_path: Path) -> None:
    path = _applied(tmp_path)
    state_file = tmp_path / ".dsl" / "demo" / "state.json"
    data = json.loads(state_file.read_text())
    data["version"] = 1  # as the previous release wrote it: absolute paths, inputs keyed by fingerprints
    for entry in data["steps"].values():
        entry["artifact"] = str((tmp_path / ".dsl" / "demo" / entry["artifact"]).resolve())
        entry.pop("facets"), entry.pop("state_version")
    state_file.write_text(json.dumps(data))
    plan = sdk.plan(load(path), tmp_path / ".dsl" / "demo", backend="test")
    roots = {s.id for s in plan.steps if not s.depends_on}
    assert roots and all(plan.step(s).action.value == "noop" for s in roots)  # unchanged steps keep their fingerprint
    for s in plan.steps:
        if s.depends_on and s.action.value == "replace":
            assert "older version" in s.reason or "will change" in s.reason, s.reason
    assert sdk.apply(load(path), backend="test").ok
    assert not sdk.plan(load(path), tmp_path / ".dsl" / "demo", backend="test").pending
    assert all(not Path(e["artifact"]).is_absolute() for e in json.loads(state_file.read_text())["steps"].values())


# ------------------------------------------------------------------------ links planted deeper in a workdir

@pytest.mark.parametrize("planted", ["runs", "cache", "mlruns", "mlruns/mlflow.db", "cache/synth/gen/journal.jsonl",
                                     "cache/eval/eval.expert", "runs/20261205T091500-042ab12.jsonl"])
def test_a_link_planted_anywhere_the_project_writes_is_refused(tmp_path: Path, planted: str) -> None:
    """Event logs and kept predictions (runs/), synth journals and cached eval answers (cache/), the tracking
    store (mlruns/): an apply, even a no-op, refuses a link there before anything writes through it."""
    path = _applied(tmp_path)
    wd = tmp_path / ".dsl" / "demo"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    link = wd / planted
    if link.exists():
        shutil.rmtree(link) if link.is_dir() else link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim / "precious.txt" if planted.endswith((".db", ".jsonl")) else victim)
    with pytest.raises(DslError, match=f"{planted} is a symbolic link"):
        sdk.apply(load(path), backend="test", replace=["corpus.docs"])
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_review_log_is_never_reached_through_a_linked_folder(tmp_path: Path) -> None:
    from sdk import reviews as RV

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "reviews").symlink_to(outside)
    log = RV.decisions_path(tmp_path / "recipe", "demo", "gen")
    entry = {"id": "r1", "decision": "accept", "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}
    with pytest.raises(DslError, match="reviews is a symbolic link"):
        RV.append(log, [entry])
    assert list(outside.iterdir()) == []


def test_a_huge_one_line_review_import_is_refused_at_its_line_in_bounded_memory(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from sdk import reviewio as IO
    from sdk.errors import DataError

    monkeypatch.setenv("DSL_MAX_LINE_BYTES", str(2**20))
    path = tmp_path / "filled.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,decision,reason\n")
        f.write("r1,accept," + "x" * 24_000_000 + "\n")  # one 24 MB line
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"^filled\.csv:2: the line is longer than the limit of 1,048,576 bytes"):
            list(IO.read_records(path, "filled.csv"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak  # the line is never held whole
