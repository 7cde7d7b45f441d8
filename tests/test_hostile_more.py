"""More attacks with hostile files and data (issue 24, second round), each proved on real files and the real `dsl`
command: JSON bombs in data, eval sets and workdir records; FIFOs planted in a workdir; templates that build huge
values or recurse; recipe paths with NUL bytes or names no system allows; zip bombs and damaged zips as eval sets;
model folders with absurd configs, deep tokenizers or pickled weights; hostile run logs. Each is a clear, located
error, never a traceback, a hang or a write outside the folders dsl owns. Hostile peers (upstreams, gateway
clients, `dsl ui` requests) are in tests/test_hostile_peers.py."""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from sdk.errors import DataError, DslError
from tests._specs import write_small
from tests.conftest import run_dsl

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000


def finishes(fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``fn()``'s result or exception, failing the test (instead of hanging it) when it blocks."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for {seconds}s"
    return out.get("error", out.get("value"))


# ------------------------------------------------------------------------------------------------ JSON bombs

@pytest.mark.parametrize("bomb", [DEEP, '{"a": ' + HUGE_INT + "}"])
def test_json_bombs_are_located_errors_in_data_eval_sets_and_records(tmp_path: Path, bomb: str) -> None:
    from sdk.evalsets import _text_rows
    from sdk.jsonl import read_jsonl
    from sdk.records.files import parse_json

    data = tmp_path / "rows.jsonl"
    data.write_text('{"ok": 1}\n' + bomb + "\n")
    with pytest.raises(DataError, match=r"rows\.jsonl:2: malformed JSON"):
        list(read_jsonl(data))
    with pytest.raises(DataError, match=r"eval\.json.*malformed JSON"):
        _text_rows(bomb, "json", "eval.json")
    with pytest.raises(DslError, match=r"state\.json: the state is not a record"):
        parse_json(bomb, Path("state.json"), "the state")


def test_a_deep_state_file_is_one_clear_line_from_dsl_not_an_internal_error(tmp_path: Path) -> None:
    recipe = write_small(tmp_path)
    (tmp_path / ".dsl" / "demo").mkdir(parents=True)
    (tmp_path / ".dsl" / "demo" / "state.json").write_text('{"lineage": ' + DEEP)
    r = run_dsl("status", str(recipe), timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "state.json" in r.stderr and "nested too deep" in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------------ FIFOs in a workdir

def test_fifos_planted_in_a_workdir_are_refused_never_waited_on(tmp_path: Path) -> None:
    from sdk.integrity import read_manifest
    from sdk.state import StateStore, WorkdirLock
    from sdk.workdirs import owner

    wd = tmp_path / "wd"
    (wd / "artifacts" / "step").mkdir(parents=True)
    os.mkfifo(wd / "state.json")
    os.mkfifo(wd / ".lock")
    os.mkfifo(wd / "artifacts" / "step" / "manifest.json")
    assert finishes(lambda: owner(wd)) is None  # the state store says what is wrong (next line)
    err = finishes(lambda: StateStore(wd).load())
    assert isinstance(err, DslError) and "not a regular file" in str(err), err
    err = finishes(lambda: WorkdirLock(wd).__enter__())
    assert isinstance(err, DslError) and "not a regular file" in str(err), err
    why = "manifest.json is not a regular file (a FIFO, device or folder)"
    assert finishes(lambda: read_manifest(wd / "artifacts" / "step")) == (None, why)
    os.unlink(wd / ".lock")
    (wd / "runs").mkdir()
    os.mkfifo(wd / "runs" / "events.jsonl")  # anywhere the project writes its logs, journals and caches
    err = finishes(lambda: WorkdirLock(wd).__enter__())
    assert isinstance(err, DslError) and "runs/events.jsonl is not a regular file" in str(err), err


def test_dsl_status_with_a_fifo_as_state_file_exits_1_at_once(tmp_path: Path) -> None:
    recipe = write_small(tmp_path)
    (tmp_path / ".dsl" / "demo").mkdir(parents=True)
    os.mkfifo(tmp_path / ".dsl" / "demo" / "state.json")
    r = run_dsl("status", str(recipe), timeout=60)  # it blocked forever before
    assert r.returncode == 1 and "not a regular file" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------ templates that build or recurse

BUILDERS = {
    "replace twice": "{{ x|replace('a', x)|replace('a', x)|length }}",
    "str.replace": "{{ x.replace('a', x).replace('a', x)|length }}",
    "~ doubling": "{% set ns = namespace(v=x) %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}"
                  "{{ ns.v|length }}",
    "+ doubling": "{% set ns = namespace(v=x) %}{% for i in range(40) %}{% set ns.v = ns.v + ns.v %}{% endfor %}"
                  "{{ ns.v|length }}",
    "list + doubling": "{% set ns = namespace(v=[x]) %}{% for i in range(40) %}{% set ns.v = ns.v + ns.v %}"
                       "{% endfor %}{{ ns.v|length }}",
    "ljust": "{{ x.ljust(1000000000)|length }}",
    "zfill": "{{ x.zfill(1000000000)|length }}",
    "join": "{{ ([x] * 5000)|join|length }}",
    "str.join": "{{ ''.join([x] * 5000)|length }}",
    "indent": "{{ (x|replace('a', '\n'))|indent(9000)|length }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "deep expression": "{{ " + "(" * 600 + "1" + ")" * 600 + " }}",
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_templates_cannot_build_huge_values_or_recurse(name: str) -> None:
    from sdk.templating import render, render_chat

    with pytest.raises(DslError, match=r"^rag\.docs: the prompt template (is refused|cannot be rendered)"):
        render(BUILDERS[name], "rag.docs: the prompt template", x="a" * 3000)
    with pytest.raises(DslError, match=r"^the chat template (is refused|cannot be rendered)"):
        render_chat(BUILDERS[name].replace("x", "messages[0].content"), [{"role": "user", "content": "a" * 3000}])


def test_ordinary_templates_still_build_what_they_ask() -> None:
    from sdk.templating import render

    out = render("{{ docs|map(attribute='content')|join('\n')|replace('SIP', 'S.I.P.') }} ~ {{ q ~ '?' }} "
                 "{{ q.ljust(8) }}| {{ (q + q)|length }} {{ ('ab' * 3)|indent(2) }}", "t",
                 docs=[{"content": "SIP one"}, {"content": "two"}], q="why")
    assert out == "S.I.P. one\ntwo ~ why? why     | 6 ababab"
    assert render("{{ ', '.join(xs|map('upper')) }}", "t", xs=["a", "b"]) == "A, B"  # a generator joined whole


# ------------------------------------------------------------------------------------- names no file can have

@pytest.mark.parametrize("rel,why", [("a\x00b.jsonl", "NUL character"), ("x" * 300 + ".jsonl", "longer than"),
                                     ("d/" * 2100 + "f", "longer than")])
def test_paths_no_system_allows_are_located_problems_not_exceptions(tmp_path: Path, rel: str, why: str) -> None:
    from sdk.spec.paths import path_problem

    class Spec:
        base_dir, roots, max_file_mb = tmp_path, [], None

    for glob in (False, True):
        assert why in (path_problem(Spec, rel, glob=glob) or ""), rel[:20]
    assert why in (path_problem(Spec, rel, confined=False) or "")


def test_a_nul_byte_in_a_recipe_path_is_a_located_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.dsl"
    recipe.write_text('domain d {\n  dataset qa { path = "sft\\u0000.jsonl"  format = chat }\n}\n')
    r = run_dsl("validate", str(recipe), timeout=60)
    assert r.returncode == 1 and "r.dsl:2:" in r.stdout + r.stderr and "NUL" in r.stdout + r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for base, why in (("b\\u0000.dsl", "NUL character"), ("b" * 5000 + ".dsl", "longer than")):  # was exit 70
        recipe.write_text(f'extends "{base}"\ndomain d {{\n}}\n')
        r = run_dsl("validate", str(recipe), timeout=60)
        assert r.returncode == 1 and "r.dsl:1:1: error: extends: " in r.stdout + r.stderr, r.stdout + r.stderr
        assert why in r.stdout + r.stderr and "internal error" not in r.stdout + r.stderr


# ----------------------------------------------------------------------------------------------- zip eval sets

def test_a_zip_bomb_eval_set_is_refused_by_its_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.evalsets import _zip_rows

    bomb = tmp_path / "eval.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../../evil.jsonl", "\n" * 3_000_000)  # 3 MB of newlines in a few KB; a name that climbs
    assert bomb.stat().st_size < 50_000
    monkeypatch.setenv("DSL_MAX_UNZIPPED_BYTES", "1000000")
    with pytest.raises(DataError, match=r"eval\.zip: \.\./\.\./evil\.jsonl unpacks to 3,000,000 bytes, over the "
                                        r"limit of 1,000,000"):
        _zip_rows(bomb, "auto", "eval.zip", None)
    monkeypatch.delenv("DSL_MAX_UNZIPPED_BYTES")
    assert _zip_rows(bomb, "auto", "eval.zip", None) == []  # read in memory: nothing is ever extracted
    assert not (tmp_path.parent / "evil.jsonl").exists()


def test_a_damaged_zip_eval_set_is_a_located_error(tmp_path: Path) -> None:
    from sdk.evalsets import _zip_rows

    bad = tmp_path / "eval.zip"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(200))
    with pytest.raises(DataError, match=r"eval\.zip: cannot read the zip"):
        _zip_rows(bad, "auto", "eval.zip", None)


# ---------------------------------------------------------------------------------------------- model folders

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests._tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


def test_a_config_declaring_a_million_layers_is_refused_before_any_memory_is_taken(tmp_path: Path,
                                                                                    tiny: Path) -> None:
    import shutil

    from sdk.backends.models import ModelHandle, load, sized_to_its_weights

    sized_to_its_weights(str(tiny))  # a real folder passes
    bomb = tmp_path / "bomb"
    shutil.copytree(tiny, bomb)
    config = json.loads((bomb / "config.json").read_text())
    (bomb / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1_000_000}))
    with pytest.raises(DslError, match=r"bomb/config\.json declares a model of about .* \(1,000,000 layers of "):
        load(ModelHandle(model=str(bomb)))  # transformers initialised every missing layer: 200 GB


def test_a_tokenizer_json_nested_thousands_deep_is_named_not_an_internal_error(tmp_path: Path, tiny: Path) -> None:
    import shutil

    from sdk.backends.models import ModelHandle, load

    shutil.copytree(tiny, tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").write_text('{"version": "1.0", "x": ' + DEEP + "}")
    with pytest.raises(DslError, match=r"the tokenizer in .*tok cannot be loaded \(RecursionError"):
        load(ModelHandle(model=str(tmp_path / "tok")))


@pytest.mark.parametrize("rel", ["~/secret.jsonl", "C:\\Windows\\win.ini", "\\\\server\\share\\x.jsonl",
                                 "~root/.ssh/id_rsa"])
def test_home_drive_and_unc_paths_are_plain_names_inside_the_recipe_folder(tmp_path: Path, rel: str) -> None:
    from sdk.spec.paths import confine

    class Spec:
        base_dir, roots = tmp_path, []

    target, problem = confine(Spec, rel)
    assert problem is None and target is not None and target.is_relative_to(tmp_path), (rel, target)


def test_a_model_folder_of_pickled_weights_is_refused_and_runs_nothing(tmp_path: Path, tiny: Path) -> None:
    import shutil

    import torch

    from sdk.backends.models import ModelHandle, load

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    shutil.copytree(tiny, tmp_path / "pkl")
    (tmp_path / "pkl" / "model.safetensors").unlink()
    torch.save({"w": Evil()}, tmp_path / "pkl" / "pytorch_model.bin")
    with pytest.raises(DslError, match=r"pkl holds its weights only as pickles \(pytorch_model\.bin\): dsl never "
                                       r"loads a pickle"):
        load(ModelHandle(model=str(tmp_path / "pkl")))
    assert not (tmp_path / "PWNED").exists()


def test_a_hostile_run_log_neither_blocks_nor_breaks_the_runs_listing(tmp_path: Path) -> None:
    from sdk import events as EV

    good, fifo, deep = (EV.new_run_id(time.time() - n) for n in (30, 20, 10))
    EV.append_event(EV.log_path(tmp_path, good), good, "run_started", data={"recipe": "r.dsl", "domain": "d"})
    os.mkfifo(EV.log_path(tmp_path, fifo))  # the runs page and dsl status read every log
    EV.log_path(tmp_path, deep).write_text(DEEP + "\n")
    runs = finishes(lambda: EV.list_runs(tmp_path))
    assert [r["run_id"] for r in runs] == [good], runs
    err = finishes(lambda: EV.read_events(tmp_path, fifo))
    assert isinstance(err, EV.UnknownRun) and "not a regular file" in str(err), err
