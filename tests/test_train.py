"""Training backends on the CPU with tiny models built in the test: pretrain -> LoRA -> generate, QLoRA, resume
after SIGKILL, determinism, a 2-process torchrun run, merged export, and bad inputs."""

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
import sdk.workspace
from dsl.parser import load
from sdk.errors import DslError, SpecError
from sdk.planner import PlanProblems
from tests._tiny import SAMPLE_TEXT, make_tiny_model
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

HEAD = '''domain t {
  base_model tiny { architecture = llama { layers = 2, hidden = 64, heads = 4, vocab = 400, context = 128 } }
  base_model local { path = "model" }
  corpus docs { paths = ["corpus/*.txt"]  split = { by = word, length = 60, overlap = 0 }  dedupe = none }
  dataset qa { path = "sft.jsonl"  validation_split = 0.2 }
'''


def _folder(tmp: Path, body: str) -> Path:
    (tmp / "corpus").mkdir(parents=True, exist_ok=True)
    sentences = SAMPLE_TEXT.split(". ")
    for i in range(4):
        (tmp / "corpus" / f"d{i}.txt").write_text(". ".join(sentences[(i + j) % len(sentences)] for j in range(40)))
    rows = [{"messages": [{"role": "user", "content": f"What starts a SIP call {i}?"},
                          {"role": "assistant", "content": "The INVITE request."}]} for i in range(10)]
    (tmp / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    path = tmp / "r.dsl"
    path.write_text(HEAD + body + "}\n")
    return path


def _artifact(path: Path, step: str) -> sdk.backends.base.Artifact:  # type: ignore[name-defined]
    return sdk.workspace.open_workspace(path).artifact(step)


def test_pretrain_then_lora_then_load_and_generate(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _folder(tmp_path, '''
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 8  batch_size = 4  block_size = 64 }
  finetune sip { from = pretrain.base  data = dataset.qa  method = lora  lora = { rank = 4, alpha = 8 }  max_steps = 4  batch_size = 2 }
''')
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    pre = _artifact(path, "pretrain.base")
    m = pre.metrics
    assert m["steps"] == 8 and m["perplexity_before"] > m["perplexity_after"] > 1
    assert (pre.path / "loss.png").stat().st_size > 1000 and json.loads((pre.path / "loss.json").read_text())
    assert "Trained by domain-dsl" in (pre.path / "model" / "README.md").read_text()
    ft = _artifact(path, "finetune.sip")
    assert ft.metrics["steps"] == 4 and "eval_loss" in ft.metrics
    assert ft.metrics["loss_mode"] == "assistant_only_loss"  # the tokenizer's template marks assistant turns
    adapter = ft.path / "adapter"
    card = (adapter / "README.md").read_text()
    assert "sft.jsonl" in card and "rank" in card
    tok = AutoTokenizer.from_pretrained(adapter)
    assert tok.chat_template and "{% generation %}" in tok.chat_template
    base = AutoModelForCausalLM.from_pretrained(pre.path / "model")
    model = PeftModel.from_pretrained(base, adapter)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What starts a SIP call?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 5 or out.shape[1] > prompt["input_ids"].shape[1]


def test_qlora_merge_and_merged_logits_match_adapter(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = _folder(tmp_path, '''
  finetune q { from = base_model.local  data = dataset.qa  method = qlora  max_steps = 2  batch_size = 2 }
  finetune m { from = base_model.local  data = dataset.qa  method = lora  max_steps = 2  batch_size = 2  merge = true }
''')
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    q = _artifact(path, "finetune.q")
    assert (q.path / "adapter" / "adapter_model.safetensors").exists() and q.outputs["method"] == "qlora"
    m = _artifact(path, "finetune.m")
    ids = torch.tensor([[5, 17, 42, 9, 3, 88]])
    merged = AutoModelForCausalLM.from_pretrained(m.path / "merged")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), m.path / "adapter")
    with torch.no_grad():
        a, b = merged(ids).logits, adapted(ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_two_runs_give_the_same_losses(tmp_path: Path) -> None:
    losses = []
    for run in ("a", "b"):
        path = _folder(tmp_path / run, '''
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 6  batch_size = 4  block_size = 64  logging_steps = 1 }
''')
        assert sdk.apply(load(path)).ok
        losses.append(json.loads((_artifact(path, "pretrain.base").path / "loss.json").read_text()))
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_killed_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = _folder(tmp_path, '''
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 40  batch_size = 4  block_size = 64  save_steps = 5 }
''')
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "apply", str(path), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / ".dsl" / "t" / "checkpoints" / "pretrain.base"
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("*/checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = list(ckpts.glob("*/checkpoint-*/trainer_state.json"))
    assert saved, "no checkpoint appeared before the kill"
    result = sdk.apply(load(path))
    assert result.ok
    m = _artifact(path, "pretrain.base").metrics
    assert m["steps"] == 40 and m["resumed_from"] and m["resumed_from"].startswith("checkpoint-")
    assert not ckpts.exists() or not any(ckpts.iterdir())  # checkpoints are cleaned after success


def test_two_process_torchrun_finetune(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = _folder(tmp_path, '''
  finetune ddp { from = base_model.local  data = dataset.qa  method = lora  max_steps = 3  batch_size = 2 }
  compute { launcher = torchrun  num_processes = 2  cpu = true }
''')
    import io

    from sdk.progress import Progress

    shown = io.StringIO()  # not a terminal: plain progress lines, relayed from rank 0 while the ranks run
    result = sdk.apply(load(path), progress=Progress(enabled=False, plain=True, stream=shown, after=0.0))
    assert result.ok, [o.error for o in result.failed]
    art = _artifact(path, "finetune.ddp")
    assert art.metrics["steps"] == 3
    lines = [x for x in shown.getvalue().splitlines() if "finetune.ddp: fine-tuning" in x]
    assert lines and any("3/3 (100%)" in x for x in lines), shown.getvalue()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), art.path / "adapter")
    assert model is not None


def test_accelerate_command_for_gpus_with_deepspeed_and_fsdp(tmp_path: Path) -> None:
    import yaml

    from sdk.backends.training.common import launch_command

    cmd = launch_command({"launcher": "accelerate", "num_processes": 8, "num_machines": 2, "machine_rank": 1,
                          "main_process_ip": "10.0.0.1", "main_process_port": 29500, "mixed_precision": "bf16",
                          "deepspeed": {"stage": 3, "offload": True}}, tmp_path / "job.json", tmp_path)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[-3:] == ["-m", "sdk.backends.training.finetune", str(tmp_path / "job.json")]
    cfg = yaml.safe_load((tmp_path / "accelerate.yaml").read_text())
    assert cfg["distributed_type"] == "DEEPSPEED" and cfg["num_processes"] == 16 and cfg["machine_rank"] == 1
    assert cfg["deepspeed_config"]["zero_stage"] == 3 and cfg["deepspeed_config"]["offload_param_device"] == "cpu"
    assert cfg["main_process_ip"] == "10.0.0.1" and cfg["mixed_precision"] == "bf16"
    launch_command({"launcher": "accelerate", "num_processes": 4, "fsdp": {"sharding": "full_shard"}}, tmp_path / "j", tmp_path)
    cfg = yaml.safe_load((tmp_path / "accelerate.yaml").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD"


def test_torchrun_on_one_machine_takes_a_free_port_unless_one_is_asked_for(tmp_path: Path) -> None:
    """Two applies on one machine (or two test workers) must not both bind torchrun's default port 29500."""
    from sdk.backends.training.common import launch_command

    job = tmp_path / "job.json"
    one = launch_command({"launcher": "torchrun", "num_processes": 2}, job, tmp_path)
    assert "--standalone" in one and "--master_port" not in one
    asked = launch_command({"launcher": "torchrun", "num_processes": 2, "main_process_port": 29611}, job, tmp_path)
    assert asked[asked.index("--master_port") + 1] == "29611" and "--standalone" not in asked
    nodes = launch_command({"launcher": "torchrun", "num_processes": 2, "num_machines": 2, "main_process_ip": "10.0.0.1"},
                           job, tmp_path)
    assert "--master_port=29500" in nodes and "--master_addr=10.0.0.1" in nodes and "--standalone" not in nodes


def test_tokenizer_without_chat_template_is_caught_at_plan_time(tmp_path: Path) -> None:
    path = _folder(tmp_path, '''
  finetune sip { from = base_model.local  data = dataset.qa  max_steps = 1 }
''')
    config = json.loads((tmp_path / "model" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "model" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(PlanProblems, match="has no chat template and the spec gives none"):
        sdk.plan(load(path))


def test_qlora_without_bitsandbytes_is_caught_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    path = _folder(tmp_path, '''
  finetune q { from = base_model.local  data = dataset.qa  method = qlora }
''')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(PlanProblems, match="method = qlora needs bitsandbytes"):
        sdk.plan(load(path))


def test_missing_base_model_path_is_a_spec_error(tmp_path: Path) -> None:
    path = _folder(tmp_path, "")
    path.write_text(path.read_text().replace('path = "model"', 'path = "nope"'))
    with pytest.raises(SpecError, match="'nope' does not exist"):
        load(path)


def test_corpus_too_small_for_the_block_size_is_a_clear_error(tmp_path: Path) -> None:
    path = _folder(tmp_path, '''
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 2  block_size = 128 }
''')
    for doc in (tmp_path / "corpus").glob("*.txt"):
        doc.write_text("A SIP INVITE starts a call. " * 3)
    result = sdk.apply(load(path))
    assert result.failed and "too small for block_size" in result.failed[0].error
    with pytest.raises(DslError):
        sdk.workspace.open_workspace(path).artifact("pretrain.base")


def test_training_threads_follow_dsl_threads_then_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sdk.backends.training.common import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("DSL_THREADS", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads()
        assert torch.get_num_threads() == 1  # a torchrun rank, or a parallel test worker
        monkeypatch.setenv("DSL_THREADS", "64")
        set_threads()
        assert torch.get_num_threads() == min(64, os.cpu_count() or 1)  # never more than the cores
        monkeypatch.delenv("DSL_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS")
        set_threads()
        assert torch.get_num_threads() == min(2, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
