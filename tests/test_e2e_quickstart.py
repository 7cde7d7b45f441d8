"""The main job end to end, applied once for the module: the quickstart exactly as `make demo` runs it, the thesis
of the quickstart (fine-tuning plus retrieval beats either alone, with paired-bootstrap p < 0.05, on questions whose
answers only the retrieved sheets hold), the routed system (route.default) as good as rag.tuned, the figures README
and docs/serving.md quote for the quickstart against what this run produced, a no-op re-apply, an eval-only change,
then `dsl serve` answering the official openai client with model="auto". The README's commands run on a moved copy
of the applied folder (a workdir is data: it moves with its recipe), so its `dsl apply` has nothing to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RECIPES, ROOT, run_dsl
from tests.test_docs_commands import run_doc

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # alone: trained with the demo's threads

OTHERS = ("pretrain.base", "finetune.sip", "rag.docs")
# How far a figure the README quotes may be from this run's: 3 of the 60 items. The same code gives 0.900 or 0.917
# for rag.tuned, 0.000 or 0.050 for finetune.sip, on different CPUs (float summation order in the tiny model); a
# change that moves a figure further fails here until the README says what the code gives.
README_TOLERANCE = 3 / 60 + 1e-9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """(the applied recipes folder, the first apply's --json result, an untouched copy of the applied folder)."""
    if not (RECIPES / "quickstart.dsl").exists():
        pytest.fail("recipes/quickstart.dsl is missing")
    folder = tmp_path_factory.mktemp("e2e") / "recipes"
    shutil.copytree(RECIPES, folder, ignore=shutil.ignore_patterns(".dsl"))
    first = run_dsl("apply", str(folder / "quickstart.dsl"), "--json", "--no-progress", timeout=1800)
    assert first.returncode in (0, 4), first.stderr[-3000:]
    pristine = tmp_path_factory.mktemp("moved") / "recipes"
    shutil.copytree(folder, pristine, symlinks=True)
    return folder, json.loads(first.stdout), pristine


def test_apply_reapply_change_and_serve(applied: tuple[Path, dict, Path]) -> None:
    workspace, result, _ = applied
    recipe = str(workspace / "quickstart.dsl")
    ran = {s["id"] for s in result["steps"] if s["status"] == "ran"}
    assert {"corpus.handbook", "pretrain.base", "finetune.sip", "rag.tuned", "eval.expert"} <= ran
    summary = _assert_thesis(recipe)
    _assert_routed(summary)
    _assert_docs_figures(recipe, summary)

    again = json.loads(run_dsl("apply", recipe, "--json", "--no-progress", timeout=600).stdout)
    assert {s["status"] for s in again["steps"]} <= {"up_to_date", "gate_failed", "skipped"}
    assert not [s for s in again["steps"] if s["status"] == "ran"]

    text = (workspace / "quickstart.dsl").read_text()
    systems = "    systems = [rag.tuned, route.default, pretrain.base, finetune.sip, rag.docs]\n"  # eval expert's
    assert text.count(systems) == 1
    (workspace / "quickstart.dsl").write_text(text.replace(systems, systems + "    bootstrap = 300\n"))
    plan = json.loads(run_dsl("plan", recipe, "--json").stdout)
    changed = {s["id"]: s for s in plan["steps"] if s["action"] != "noop"}
    assert "eval.expert" in changed and changed["eval.expert"]["reason"] == "configuration changed"
    assert set(changed) <= {"eval.expert", "route.default", "serve.default"}
    third = json.loads(run_dsl("apply", recipe, "--json", "--no-progress", timeout=900).stdout)
    assert {s["id"] for s in third["steps"] if s["status"] == "ran"} <= {"eval.expert", "route.default", "serve.default"}
    assert "eval.expert" in {s["id"] for s in third["steps"] if s["status"] in ("ran", "gate_failed")}

    if any(s["id"] == "serve.default" and s["status"] in ("ran", "up_to_date") for s in third["steps"]):
        _serve_and_query(recipe)


def test_readme_commands_on_the_moved_applied_quickstart(applied: tuple[Path, dict, Path], tmp_path: Path) -> None:
    """Every `dsl` line of the README's console blocks succeeds, run as a reader would from the repository root; the
    applied quickstart was moved here with its workdir, so the README's `dsl apply` finds every step up to date."""
    _, _, pristine = applied
    shutil.copytree(pristine, tmp_path / "recipes", symlinks=True)
    ran = run_doc(ROOT / "README.md", tmp_path)
    assert "dsl apply recipes/quickstart.dsl" in ran and "dsl status recipes/quickstart.dsl" in ran
    plan = json.loads(run_dsl("plan", "recipes/quickstart.dsl", "--json", cwd=tmp_path).stdout)
    assert {s["action"] for s in plan["steps"]} == {"noop"}, [s for s in plan["steps"] if s["action"] != "noop"]


def _assert_thesis(recipe: str) -> dict:
    """rag.tuned answers most questions about sites no model was trained on, and beats each other system on exact
    match with a paired-bootstrap p < 0.05 (rag.tuned is listed first, so each comparison is against it); no eval
    question overlaps the training data. (The recipe's gate asks for 0.6; measured 0.900 [0.817, 0.950], the others
    0.000, p = 0.002 each; the thesis asserted here is the ordering and its significance.)"""
    report = run_dsl("report", recipe, "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    summary = json.loads(report.stdout)
    scores = {sid: summary["metrics"][sid]["exact_match"]["value"] for sid in ("rag.tuned", *OTHERS)}
    assert scores["rag.tuned"] >= 0.5, scores
    for other in OTHERS:
        cmp = summary["comparisons"][other]["exact_match"]
        assert cmp["difference"] < 0 and cmp["p_value"] < 0.05, (other, cmp, scores)
    assert summary["contamination"]["checked"] and summary["contamination"]["contaminated"] == 0
    return summary


def _assert_routed(summary: dict) -> None:
    """The router sends the handbook's questions to rag.tuned, so the routed system scores as rag.tuned does (the
    recipe's gate asks for at most 0.05 less), and the report shows each routing decision."""
    routed = summary["metrics"]["route.default"]["exact_match"]["value"]
    assert routed >= summary["metrics"]["rag.tuned"]["exact_match"]["value"] - 0.05, summary["routing"]
    went = summary["routing"]["route.default"]["systems"]
    assert went.get("rag.tuned", {}).get("items", 0) >= 57, went  # at most 3 of 60 questions sent away


def _quoted_table() -> dict[str, tuple[float, ...]]:
    """system -> the numbers of its row in the README's quickstart table (exact match first)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| system | exact match |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for m in re.finditer(r"^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+)\|", table, re.MULTILINE):
        rows[m.group(1)] = tuple(float(x) for x in re.findall(r"\d\.\d{3}", m.group(2)))
    return rows


def _assert_docs_figures(recipe: str, summary: dict) -> None:
    """Every exact match the README's quickstart table quotes is this run's, within README_TOLERANCE; its
    recall@1 is; docs/serving.md's `dsl route` example prints what the applied router prints."""
    quoted = _quoted_table()
    assert set(quoted) == {"rag.tuned", "route.default", *OTHERS}, quoted
    for sid, numbers in quoted.items():
        measured = summary["metrics"][sid]["exact_match"]["value"]
        assert abs(numbers[0] - measured) <= README_TOLERANCE, (
            f"README quotes {sid} exact match {numbers[0]:.3f}, this run gives {measured:.3f}: update the README")
    readme = (ROOT / "README.md").read_text()
    recall = re.search(r"recall@1 = (\d\.\d+)", readme)
    assert recall and abs(float(recall.group(1)) - summary["metrics"]["rag.tuned"]["recall_at_k"]["value"]) < 0.02
    serving = (ROOT / "docs" / "serving.md").read_text()
    examples = re.findall(r'^\$ dsl route recipes/quickstart\.dsl "([^"]+)"\n(.+)$', serving, re.MULTILINE)
    assert examples, "docs/serving.md has no dsl route example for the quickstart"
    for query, printed in examples:
        out = run_dsl("route", recipe, query)
        assert out.returncode == 0 and out.stdout.strip() == printed.strip(), (query, out.stdout, printed)


def _serve_and_query(recipe: str) -> None:
    from openai import OpenAI

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "serve", recipe, "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=60, max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                models = client.models.list()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("the gateway did not start")
                time.sleep(1)
        assert "auto" in {m.id for m in models.data}
        reply = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What is the T3412 timer at site Gepi?"}], max_tokens=16)
        assert reply.headers.get("x-dsl-target")
        body = reply.parse()
        assert body.choices[0].message.content is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
