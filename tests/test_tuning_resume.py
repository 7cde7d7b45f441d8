"""Preference (``align``: DPO, SimPO, ORPO, KTO) and reward (``reward``, GRPO) steps keep the training promises of
``pretrain`` and ``finetune``: two runs with the same seed give the same losses, a run killed with SIGKILL after a
checkpoint resumes from it on the next ``dsl apply`` and finishes the planned steps, and a compute block launches them on
two processes with torchrun (gloo on the CPU). Real TRL trainers, tiny models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.workspace import open_workspace
from tests._tiny import make_tiny_model
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

OPTIONS = ["red", "dog", "car", "apple"]
PAIRS = [("What starts a SIP call?", "The INVITE request.", "The BYE request."),
         ("What ends a SIP call?", "The BYE request.", "The INVITE request."),
         ("Which protocol carries media?", "RTP carries the media.", "Diameter carries the media.")]


def _folder(tmp: Path, block: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    prefs = [{"prompt": [{"role": "user", "content": f"{q} ({i})"}], "chosen": good, "rejected": bad}
             for i in range(12) for q, good, bad in [PAIRS[i % len(PAIRS)]]]
    (tmp / "prefs.jsonl").write_text("\n".join(json.dumps(r) for r in prefs) + "\n")
    feedback = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"} for r in prefs
                for k in ("chosen", "rejected")]
    (tmp / "feedback.jsonl").write_text("\n".join(json.dumps(r) for r in feedback) + "\n")
    mc = [{"question": f"Which one is item {i}?", "choices": OPTIONS, "answer": str(i % 4 + 1)} for i in range(8)]
    (tmp / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    path = tmp / "r.dsl"
    path.write_text('domain t {\n  base_model local { path = "model" }\n' + block + "}\n")
    return path


ALIGN = '''  align pref {{ from = base_model.local  pairs = "prefs.jsonl"  max_steps = {steps}  batch_size = 2
               logging_steps = 1  save_steps = {save}  learning_rate = 0.001 }}
'''
REWARD = '''  reward mc {{ from = base_model.local  prompts = "mc.jsonl"  rewards = {{ accuracy = 1.0 }}
              num_generations = 2  batch_size = 4  max_completion_length = 3  max_steps = {steps}
              logging_steps = 1  save_steps = {save} }}
'''
CASES = [pytest.param("align.pref", ALIGN, id="dpo"), pytest.param("reward.mc", REWARD, id="grpo")]
METHODS = [pytest.param("align.pref", ALIGN.replace("pairs = \"prefs.jsonl\"", f'pairs = "{pairs}"  method = {m}'),
                        id=m) for m, pairs in (("simpo", "prefs.jsonl"), ("orpo", "prefs.jsonl"),
                                               ("kto", "feedback.jsonl"))]


@pytest.mark.parametrize(("step", "block"), CASES + METHODS)
def test_two_runs_with_the_same_seed_give_the_same_losses(tmp_path: Path, step: str, block: str) -> None:
    curves = []
    for run in ("a", "b"):
        path = _folder(tmp_path / run, block.format(steps=3, save=100))
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        art = open_workspace(path).artifact(step).path
        # GRPO samples its completions: the rewards they earn must repeat too, not only the loss
        extra = json.loads((art / "rewards.json").read_text()) if step.startswith("reward") else None
        curves.append((json.loads((art / "loss.json").read_text()), extra))
    assert len(curves[0][0]) == 3 and curves[0] == curves[1]


@pytest.mark.parametrize(("step", "block"), CASES + METHODS)
def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path, step: str, block: str) -> None:
    steps = 30
    path = _folder(tmp_path, block.format(steps=steps, save=2))
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "apply", str(path), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / ".dsl" / "t" / "checkpoints" / step
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("*/checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed (raise max_steps)"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(ckpts.glob("*/checkpoint-*/trainer_state.json")), "no checkpoint appeared before the kill"
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    m = open_workspace(path).artifact(step).metrics
    assert m["steps"] == steps and m["resumed_from"] and m["resumed_from"].startswith("checkpoint-")
    assert not ckpts.exists() or not any(ckpts.iterdir())  # checkpoints are cleaned after success


@pytest.mark.parametrize(("step", "block"), CASES)
def test_two_process_torchrun_run(tmp_path: Path, step: str, block: str) -> None:
    from sdk.backends.models import handle

    compute = "  compute {\n    launcher = torchrun\n    num_processes = 2\n    cpu = true\n  }\n"
    path = _folder(tmp_path, block.format(steps=2, save=100) + compute)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    art = open_workspace(path).artifact(step)
    assert art.metrics["steps"] == 2 and art.metrics["processes"] == 2 and (art.path / "loss.png").is_file()
    assert handle(art).adapter == str((art.path / "adapter").resolve())
