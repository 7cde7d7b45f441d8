"""The dsl command: help, schema, and no heavy import on the fast paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._specs import write_small
from tests.conftest import ROOT, run_dsl

HEAVY = ("torch", "transformers", "haystack", "trl", "peft", "datasets", "sklearn", "sentence_transformers")


def test_help_lists_commands() -> None:
    proc = run_dsl("--help")
    assert proc.returncode == 0
    for cmd in ("validate", "fmt", "plan", "apply", "status", "schema"):
        assert cmd in proc.stdout


def test_schema_is_json_schema_of_the_spec() -> None:
    proc = run_dsl("schema")
    schema = json.loads(proc.stdout)
    assert proc.returncode == 0 and schema["title"] == "Spec"
    props = schema["$defs"]["FinetuneBlock"]["properties"]
    assert "from" in props and props["method"]["enum"] == ["full", "lora", "qlora"]
    assert schema["$defs"]["FinetuneBlock"]["additionalProperties"] is False


def test_fast_commands_import_no_heavy_library(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    code = f"""
import sys
from dsl.cli import main
for args in (["--help"], ["validate", {str(path)!r}], ["fmt", {str(path)!r}], ["plan", {str(path)!r}]):
    try:
        main(args)
    except SystemExit as e:
        assert e.code in (0, None), (args, e.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("HEAVY=" + ",".join(heavy))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_dsl("validate", str(tmp_path / "nope.dsl"))
    assert proc.returncode == 1 and "no such recipe" in proc.stderr and "Traceback" not in proc.stderr


def test_status_is_one_line_a_step_and_shows_lineage_on_request(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    assert run_dsl("apply", str(path), "--backend", "test").returncode == 0
    short = run_dsl("status", str(path))
    assert short.returncode == 0 and "file corpus/a.txt" not in short.stdout and "artifact:" not in short.stdout
    steps = [line for line in short.stdout.splitlines() if line.startswith("done ")]
    assert len(steps) == 9 and len(short.stdout.splitlines()) <= 2 * len(steps) + 2, short.stdout
    assert f"dsl status {path} STEP, or --lineage" in short.stdout
    proc = run_dsl("status", str(path), "--lineage")
    assert proc.returncode == 0
    assert "lineage" in proc.stdout and "file corpus/a.txt" in proc.stdout and "step pretrain.base" in proc.stdout
    one = run_dsl("status", str(path), "rag.docs")
    assert "file corpus/a.txt" in one.stdout and "artifact: artifacts/rag.docs/" in one.stdout
    assert [line.split()[1] for line in one.stdout.splitlines() if line.startswith("done ")] == ["rag.docs"]
    bad = run_dsl("status", str(path), "rag.nope")
    assert bad.returncode == 1 and "no step 'rag.nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_command_asks_for_its_own_option_when_blocks_are_several(tmp_path: Path) -> None:
    from tests._specs import SMALL

    two = SMALL.replace("  eval expert {", '  eval second {\n    data = "eval.jsonl"\n    systems = [pretrain.base]\n  }\n\n  eval expert {', 1)
    assert two != SMALL
    recipe = write_small(tmp_path, two)
    r = run_dsl("report", str(recipe))
    assert r.returncode == 1 and "several eval blocks (second, expert): choose one with --eval" in r.stderr
    r = run_dsl("report", str(recipe), "--eval", "eval.nope")
    assert r.returncode == 1 and "no eval block 'nope'" in r.stderr and "have: second, expert" in r.stderr
