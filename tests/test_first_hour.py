"""The first hour of a new user: the environment is left alone, every printed next command runs, output is
readable (status on one screen, tables wrapped, answers stripped, plain progress lines in logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

_USER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HAYSTACK_TELEMETRY_ENABLED",
             "TOKENIZERS_PARALLELISM")


def test_a_corpus_step_leaves_the_users_environment_alone(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The DRX cycle of site Bage lasts 512 ms.\n")
    code = f"""
import json, os, sdk
spec = sdk.Domain("c", base_dir={str(tmp_path)!r}).corpus("docs", paths=["*.txt"]).build()
assert sdk.apply(spec).ok
import haystack.telemetry._telemetry as t
from huggingface_hub import constants
print(json.dumps({{"set": sorted(k for k in {_USER_ENV!r} if k in os.environ),
                  "offline": constants.is_offline_mode(), "telemetry_off": t.telemetry is None}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in _USER_ENV}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # nothing the user did not set, the hub reachable as the user's environment allows, Haystack's telemetry off
    assert out == {"set": [], "offline": False, "telemetry_off": True}, out
    assert "offline" not in proc.stderr.lower(), proc.stderr
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and json.loads(proc.stdout.strip().splitlines()[-1])["offline"] is True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny_recipe(folder: Path) -> Path:
    from tests._tiny import tiny_model_dir

    tiny_model_dir(folder)
    (folder / "docs").mkdir()
    (folder / "docs" / "sites.txt").write_text("The DRX cycle of site Bage lasts 512 ms.\nThe PCI of site Nupa is 259.\n")
    (folder / "eval.jsonl").write_text("".join(json.dumps({"id": str(i), "question": q, "answer": a}) + "\n"
                                               for i, (q, a) in enumerate([("What is the PCI of site Nupa?", "259"),
                                                                           ("How long is the DRX cycle of Bage?",
                                                                            "512 ms")])))
    rows = [{"text": t, "target": "domain"} for t in ("PCI of site Nupa?", "DRX cycle of site Bage?",
                                                       "Which PCI has Bage?", "DRX of Nupa")]
    rows += [{"text": t, "target": "general"} for t in ("Best pasta recipe?", "Capital of Peru?",
                                                        "Why is the sky blue?", "Recommend a novel")]
    (folder / "route.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "hour.dsl"
    path.write_text(f'''domain hour {{
  base_model tiny {{ path = "tiny-model" }}
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag first {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = base_model.tiny }}
  rag second {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = base_model.tiny }}
  eval expert {{ data = "eval.jsonl"  systems = [rag.second, rag.first]  metrics = [exact_match]  bootstrap = 100
                gate = rag.second.exact_match >= 0 }}
  route {{ examples = "route.jsonl"  domain = rag.second  general = base_model.tiny  holdout = 0.25 }}
  serve {{ port = {_free_port()} }}
}}
''')
    return path


def _dsl(line: str) -> list[str]:
    import shlex

    words = shlex.split(line.split("  #", 1)[0])
    assert words[0] == "dsl", line
    return [sys.executable, "-m", "dsl.cli", *words[1:]]


@pytest.mark.slow
def test_apply_in_a_log_is_quiet_and_every_next_line_runs_as_printed(tmp_path: Path) -> None:
    path = _tiny_recipe(tmp_path)
    env = {**os.environ, "COLUMNS": "100"}
    applied = subprocess.run(_dsl(f"dsl apply {path}"), cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert applied.returncode == 0, applied.stderr
    for fragment in ("Loading weights", "%|", "it/s]"):  # no library progress bar reaches a log
        assert fragment not in applied.stderr + applied.stdout, applied.stderr
    printed = applied.stdout.split("Next:\n", 1)[1].splitlines()
    lines = [line.strip() for line in printed if line.strip().startswith("dsl ")]
    assert [line.split()[1] for line in lines] == ["serve", "ask", "route", "report"], applied.stdout
    assert "--system rag.second" in lines[1]  # several rag blocks: the promoted one the router targets
    for line in lines[1:]:
        r = subprocess.run(_dsl(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (line, r.stderr)
        assert "None" not in r.stdout and "Loading weights" not in r.stderr, (line, r.stdout, r.stderr)
    ask = subprocess.run(_dsl(lines[1]), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    answer = ask.stdout.split("\n\nSources:")[0]
    assert answer == answer.strip() and answer, ask.stdout  # stripped, never empty
    serve = subprocess.Popen(_dsl(lines[0]), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        for line in serve.stdout:  # type: ignore[union-attr]
            out += line
            if "serving " in line or "Uvicorn running" in line:
                break
        assert "serving " in out and "auto" in out, out
    finally:
        serve.kill()
        serve.wait()


def test_long_steps_report_plain_lines_when_output_is_not_a_terminal() -> None:
    import io

    from sdk.progress import Progress

    now, out = [0.0], io.StringIO()
    progress = Progress(plain=True, enabled=False, stream=out, clock=lambda: now[0])
    with progress, progress.task("pretrain.base: pretraining", total=100) as task:
        for _ in range(100):
            now[0] += 0.5
            task.advance()
            task.update(loss=1.25)
        with progress.task("eval.expert: rag.docs", total=4) as short:  # done within 5 s: no line
            short.advance(4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11, lines  # each tenth once it ran 5 s, then the end
    assert lines[0] == "    pretrain.base: pretraining: 10/100 (10%), 2/s, ETA 0m45s  loss=1.25"
    assert lines[4].startswith("    pretrain.base: pretraining: 50/100 (50%), 2/s, ETA 0m25s")
    assert lines[-1].startswith("    pretrain.base: pretraining: 100/100 (100%), finished in 0m50s")
    stalled = io.StringIO()
    slow = Progress(plain=True, enabled=False, stream=stalled, clock=lambda: now[0])
    with slow.task("finetune.sip: fine-tuning (full)", total=1000) as task:
        for _ in range(4):
            now[0] += 31
            task.update(completed=task.completed + 1)  # far from the next tenth: a line every 30 s
    assert len(stalled.getvalue().splitlines()) == 4 + 1
    assert Progress(enabled=False).plain is False  # --no-progress: nothing at all


def test_the_report_names_the_overlapping_text_as_what_it_is() -> None:
    from dsl.parser import load
    from sdk.report import contamination_text
    from tests.conftest import RECIPES

    spec = load(RECIPES / "quickstart.dsl")

    def text(steps: list[str], checked: bool = True) -> str | None:
        contam = {"checked": checked, "ngram": 13, "contaminated": 2, "items": {}, "steps": steps}
        return contamination_text({"n_items": 60, "contamination": contam}, spec)

    retrieval_only = text(["corpus.handbook"])
    assert retrieval_only is not None and "training data" not in retrieval_only
    assert retrieval_only.startswith("no evaluated system was trained on this recipe's data")
    assert "the retrieval corpus (corpus.handbook)" in retrieval_only
    assert text(["corpus.archive", "dataset.qa", "corpus.handbook"]) == (
        "2 of 60 items share 13-grams with the training data (corpus.archive, dataset.qa) or the retrieval corpus "
        "(corpus.handbook)")
    assert text([], checked=False) is None and text([]) is None


def test_the_apply_summary_wraps_to_the_width_without_cutting_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from dsl.summary import print_summary
    from sdk.executor import StepOutcome

    monkeypatch.setenv("COLUMNS", "72")
    summary = ("tfidf router: accuracy 1.000 on 12 held-out examples it did not train on (trained on 48), "
               "threshold 0.500, 16,647 queries/s, from recipes/quickstart/route-examples-of-the-domain.jsonl")
    result = SimpleNamespace(outcomes=[StepOutcome("route.default", "ran", 0.6, summary)], ok=False)
    recipe = SimpleNamespace(spec=SimpleNamespace(name="quickstart"), path="quickstart.dsl")
    print_summary(result, recipe, tmp_path / "wd")
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 72 for line in table), out
    cells = " ".join(line.split("│")[4].strip() for line in table if line.startswith("│"))
    assert "".join(cells.split()) == "".join(summary.split()), out  # nothing cut off, nothing elided
    for word in ("held-out", "queries/s", "16,647"):  # wrapped at spaces: every word whole on one line
        assert any(word in line for line in table), out


def test_a_command_called_from_python_leaves_no_switch_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsl.cli import main
    from dsl.commands._common import BAR_SWITCHES
    from tests._specs import write_small

    for name in BAR_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own value comes back as it was
    seen: dict[str, str | None] = {}
    monkeypatch.setattr("dsl.commands._common.quiet_progress_bars",
                        lambda: (os.environ.update({n: "1" for n in BAR_SWITCHES}), seen.update(os.environ)))
    main(["validate", str(write_small(tmp_path))])  # output is not a terminal: bars are switched off meanwhile
    assert all(seen.get(n) == "1" for n in BAR_SWITCHES)
    assert os.environ.get("TQDM_DISABLE") == "0" and not any(n in os.environ for n in BAR_SWITCHES[:2])
