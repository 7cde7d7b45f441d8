"""Interop: `dsl eval-set export --format lm-eval` writes a task that the real lm-evaluation-harness runs as it
is, on a tiny local model, offline; its accuracy and per-option log-likelihoods equal ours on the same items."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdk.state import StateStore
from tests._eval import MC_ITEMS, local_model, tiny_model, write_mc_set
from tests.conftest import run_dsl

pytestmark = pytest.mark.slow


def run_lm_eval(tmp_path: Path, model: Path, task: str) -> tuple[dict, list[dict]]:
    """The real lm_eval CLI, offline, on the task exported into tmp_path/task: its results and logged samples."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}
    lm_eval = Path(sys.executable).parent / "lm_eval"
    out = subprocess.run([str(lm_eval), "--model", "hf", "--model_args", f"pretrained={model}", "--tasks", task,
                          "--include_path", str(tmp_path / "task"), "--device", "cpu", "--batch_size", "1",
                          "--output_path", str(tmp_path / "lm-out"), "--log_samples"],
                         env=env, check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(next((tmp_path / "lm-out").rglob("results_*.json")).read_text())
    samples = [json.loads(x) for x in next((tmp_path / "lm-out").rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
    return results, samples


def test_lm_eval_runs_our_export_and_agrees(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, 0)
    data = write_mc_set(tmp_path / "eval.jsonl")
    r = run_dsl("eval-set", "export", str(data), "--format", "lm-eval", "--out", str(tmp_path / "task"), "--task", "tiny_mc")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "task" / "tiny_mc.yaml").is_file()

    results, samples = run_lm_eval(tmp_path, model, "tiny_mc")
    theirs = results["results"]["tiny_mc"]["acc,none"]
    assert len(samples) == len(MC_ITEMS)

    # our eval step on the same items and model
    (tmp_path / "r.dsl").write_text(f'domain t {{\n  base_model a {{ path = "{model}" }}\n'
                                    '  eval mc {\n    data = "eval.jsonl"\n    metrics = [accuracy]\n'
                                    '    systems = [base_model.a]\n    bootstrap = 200\n  }\n}\n')
    r = run_dsl("apply", str(tmp_path / "r.dsl"), timeout=300)
    assert r.returncode == 0, r.stderr
    ours = StateStore(tmp_path / ".dsl" / "t").load().steps["eval.mc"]["metrics"]["base_model.a"]["accuracy"]["value"]
    assert ours == pytest.approx(theirs, abs=1e-6)

    # and option by option, the same log-likelihoods
    from sdk.backends.eval.evaluate import RAW_PROMPT

    local = local_model(tmp_path, model)
    by_id = {i: (q, c) for i, q, c, _ in MC_ITEMS}
    for s in samples:
        question, choices = by_id[s["doc"]["id"]]
        mine = [local.loglik(RAW_PROMPT.format(question=question), " " + c) for c in choices]
        lm = [float(resp[0][0]) for resp in s["resps"]]
        assert mine == pytest.approx(lm, abs=1e-3), s["doc"]["id"]


def test_lm_eval_runs_an_exported_free_answer_set(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, 1)
    rows = [{"id": f"g{i}", "question": q, "answer": a} for i, (q, a) in enumerate([
        ("Which protocol sets up VoIP calls?", "SIP"), ("What does RTP carry?", "media"),
        ("Which subsystem does 3GPP define for multimedia?", "IMS"), ("Which protocol describes media sessions?", "SDP")])]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_dsl("eval-set", "export", str(data), "--out", str(tmp_path / "task"), "--task", "tiny_qa",
                "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr
    yaml = (tmp_path / "task" / "tiny_qa.yaml").read_text()
    assert "output_type: generate_until" in yaml and "max_gen_toks: 24" in yaml

    results, samples = run_lm_eval(tmp_path, model, "tiny_qa")
    assert 0.0 <= results["results"]["tiny_qa"]["exact_match,none"] <= 1.0
    assert sorted(s["doc"]["id"] for s in samples) == [r["id"] for r in rows]

    # lm-eval's greedy answers are the model's own answers to the same prompt
    from sdk.backends.eval.evaluate import RAW_PROMPT

    local = local_model(tmp_path, model)
    answers = []
    for s in samples:
        mine = local.generate(s["doc"]["question"], 24, prompt=RAW_PROMPT.format(question=s["doc"]["question"]))
        theirs = s["resps"][0][0].strip().split("\n")[0].strip()
        assert mine == theirs, s["doc"]["id"]
        answers.append(mine)
    assert any(answers), "the tiny model answered nothing: the comparison would be empty"
