"""One workdir per recipe: two recipes of one folder never touch each other's artifacts; a workdir of another
domain is refused; the old shared workdir moves to its domain's place without loss."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.errors import DslError
from sdk.state import StateStore
from sdk.workdirs import default_workdir, migrate_shared
from tests._specs import SMALL, write_small
from tests.conftest import run_dsl


def _two_recipes(folder: Path) -> tuple[Path, Path]:
    demo = write_small(folder)
    other = folder / "other.dsl"
    other.write_text(SMALL.replace("domain demo {", "domain other {"))
    return demo, other


def test_two_recipes_of_one_folder_stay_applied(tmp_path: Path) -> None:
    demo, other = _two_recipes(tmp_path)
    assert sdk.apply(load(demo), backend="test").ok
    kept = StateStore(tmp_path / ".dsl" / "demo").load()
    arts = {s: kept.artifact_path(s) for s in kept.steps}
    assert sdk.apply(load(other), backend="test").ok  # deletes nothing of demo's
    assert StateStore(tmp_path / ".dsl" / "demo").load().steps == kept.steps
    assert all(p is not None and (p / "manifest.json").is_file() for p in arts.values())
    assert StateStore(tmp_path / ".dsl" / "other").load().domain == "other"
    for path in (demo, other):  # both up to date, nothing to delete
        the_plan = sdk.plan(load(path), backend="test")
        assert not the_plan.pending and not [s for s in the_plan.steps if s.action.value == "delete"]


def test_a_workdir_of_another_domain_is_refused_with_what_to_do(tmp_path: Path) -> None:
    demo, other = _two_recipes(tmp_path)
    assert sdk.apply(load(demo), backend="test").ok
    theirs = str(tmp_path / ".dsl" / "demo")
    with pytest.raises(DslError, match="holds the state of domain 'demo', not 'other'"):
        sdk.apply(load(other), theirs, backend="test")
    for cmd in ("plan", "apply", "status"):
        r = run_dsl(cmd, str(other), "--workdir", theirs, "--backend", "test") if cmd != "status" else \
            run_dsl(cmd, str(other), "--workdir", theirs)
        assert r.returncode == 1 and "would delete the artifacts of 'demo'" in r.stderr, (cmd, r.stderr)
        assert "hint: leave out --workdir" in r.stderr and "Traceback" not in r.stderr
    assert StateStore(Path(theirs)).load().domain == "demo" and not sdk.plan(load(demo), backend="test").pending


def test_the_old_shared_workdir_moves_to_its_domain_once_without_loss(tmp_path: Path) -> None:
    demo, other = _two_recipes(tmp_path)
    assert sdk.apply(load(demo), backend="test").ok
    new = tmp_path / ".dsl" / "demo"
    old = tmp_path / "old-layout"
    shutil.move(str(new), old)  # as the previous release left it: recipes/.dsl/state.json
    shutil.rmtree(tmp_path / ".dsl")
    shutil.move(str(old), tmp_path / ".dsl")
    before = json.loads((tmp_path / ".dsl" / "state.json").read_text())
    r = run_dsl("plan", str(other), "--backend", "test")  # another recipe of the folder: it migrates, then plans
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("moved the workdir of domain 'demo'") == 1 and re.search(r"(?<!\d)0 to delete", r.stdout)
    assert json.loads((new / "state.json").read_text()) == before
    assert not sdk.plan(load(demo), backend="test").pending  # every artifact still there, up to date
    r = run_dsl("plan", str(demo), "--backend", "test")
    assert r.returncode == 0 and "moved" not in r.stderr  # told once


def test_an_interrupted_migration_is_finished(tmp_path: Path) -> None:
    root = tmp_path / ".dsl"
    moving = tmp_path / ".dsl.migrating-demo"
    moving.mkdir()
    (moving / "state.json").write_text(json.dumps({"version": 2, "lineage": "x", "serial": 1, "domain": "demo",
                                                   "steps": {}}))
    said: list[str] = []
    migrate_shared(root, said.append)
    assert (root / "demo" / "state.json").is_file() and not moving.exists() and len(said) == 1


def test_the_default_workdir_is_keyed_by_the_domain(tmp_path: Path) -> None:
    spec = load(write_small(tmp_path))
    assert default_workdir(spec) == tmp_path / ".dsl" / "demo"


def test_an_old_shared_workdir_beside_new_ones_is_refused_not_moved(tmp_path: Path) -> None:
    root = tmp_path / ".dsl"
    (root / "law").mkdir(parents=True)
    for folder, domain in ((root, "demo"), (root / "law", "law")):
        (folder / "state.json").write_text(json.dumps({"version": 2, "lineage": "x", "serial": 1, "domain": domain,
                                                       "steps": {}}))
    with pytest.raises(DslError, match="holds a workdir of the old shared layout") as e:
        migrate_shared(root, print)
    assert "into " + str(root / "demo") in e.value.format()
    assert (root / "state.json").is_file() and (root / "law" / "state.json").is_file()  # nothing moved


def test_a_step_not_applied_names_the_command_that_applies_it_in_that_workdir(tmp_path: Path) -> None:
    from sdk.workspace import open_workspace

    path = write_small(tmp_path)
    with pytest.raises(DslError, match=f"run dsl apply {path}$"):
        open_workspace(path).artifact("rag.docs")
    with pytest.raises(DslError, match=f"run dsl apply {path} --workdir {tmp_path / 'w'}$"):
        open_workspace(path, tmp_path / "w").artifact("rag.docs")
