"""Fine-tuning beyond the basics, on the CPU with a tiny model built in the test: full fine-tuning on text with
packing, the same losses twice, a chat template from a file without generation markers (prompt/completion loss),
rows lost to truncation (located warning and error), a fine-tune of a fine-tune, a base model folder that vanished,
and a DslError inside a torchrun rank reaching the user as its message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.base import Artifact
from tests._tiny import SAMPLE_TEXT, make_tiny_model

pytestmark = pytest.mark.slow

# A template with no {% generation %} markers: TRL cannot mask by it, so the backend trains prompt/completion pairs.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def _recipe(tmp: Path, body: str, rows: list[dict] | None = None, text_rows: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    if rows is None:
        rows = [{"messages": [{"role": "user", "content": f"What starts a SIP call {i}?"},
                              {"role": "assistant", "content": "The INVITE request."}]} for i in range(10)]
    (tmp / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sentences = [s.strip() + "." for s in SAMPLE_TEXT.split(". ") if s.strip()]
    (tmp / "text.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in sentences * 3) + "\n")
    (tmp / "plain.jinja").write_text(PLAIN_TEMPLATE)
    path = tmp / "r.dsl"
    path.write_text('domain t {\n  base_model local { path = "model" }\n  dataset qa { path = "sft.jsonl" }\n'
                    '  dataset txt { path = "text.jsonl"  format = text }\n' + body + "}\n")
    return path


def _artifact(path: Path, step: str) -> Artifact:
    return sdk.workspace.open_workspace(path).artifact(step)


def _apply_ok(path: Path):
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    return result


def test_full_finetune_on_text_with_packing_writes_a_loadable_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _recipe(tmp_path, '''
  finetune full { from = base_model.local  data = dataset.txt  method = full  packing = true  max_length = 64
                  max_steps = 3  batch_size = 2  logging_steps = 1 }
''')
    _apply_ok(path)
    art = _artifact(path, "finetune.full")
    assert art.outputs["model"] == "model" and art.outputs["model_source"] == "artifact" and "adapter" not in art.outputs
    assert art.metrics["steps"] == 3 and art.metrics["loss_mode"] == "text" and art.metrics["train_tokens"] > 0
    assert art.metrics["tokens_per_second"] > 0
    history = json.loads((art.path / "loss.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3]
    assert "text.jsonl" in (art.path / "model" / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(art.path / "model")
    before = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert not torch.equal(model.lm_head.weight, before.lm_head.weight)  # every weight trained, not an adapter
    tok = AutoTokenizer.from_pretrained(art.path / "model")
    assert tok.chat_template  # the tokenizer and its template travel with the model


def test_the_same_finetune_twice_gives_the_same_losses(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    histories = []
    for run in ("a", "b"):
        path = _recipe(tmp_path / run, '''
  finetune sip { from = base_model.local  data = dataset.qa  method = lora  max_steps = 4  batch_size = 2  logging_steps = 1 }
''')
        _apply_ok(path)
        histories.append(json.loads((_artifact(path, "finetune.sip").path / "loss.json").read_text()))
    assert len(histories[0]) == 4 and histories[0] == histories[1]
    assert "'loss'" not in capfd.readouterr().out  # stdout stays the CLI's (dsl apply --json): no trainer log dicts


def test_chat_template_file_without_generation_markers_trains_prompt_completion(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    path = _recipe(tmp_path, '''
  finetune sip { from = base_model.local  data = dataset.qa  chat_template = file("plain.jinja")  max_steps = 2  batch_size = 2 }
''')
    _apply_ok(path)
    art = _artifact(path, "finetune.sip")
    assert art.metrics["loss_mode"] == "prompt_completion"
    assert AutoTokenizer.from_pretrained(art.path / "adapter").chat_template == PLAIN_TEMPLATE


def test_rows_emptied_by_truncation_are_named_and_an_empty_set_is_a_located_error(tmp_path: Path) -> None:
    long_prompt = "Describe the SIP INVITE request and the IMS P-CSCF " * 6
    rows = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "INVITE."}]}
            for i in range(6)]
    rows[2]["messages"][0]["content"] = long_prompt  # line 3: its answer falls past max_length
    path = _recipe(tmp_path, '''
  finetune sip { from = base_model.local  data = dataset.qa  max_length = 24  max_steps = 2  batch_size = 2 }
''', rows)
    _apply_ok(path)
    art = _artifact(path, "finetune.sip")
    assert art.metrics["rows_dropped_by_truncation"] == 1 and art.metrics["steps"] == 2

    path.write_text(path.read_text().replace("max_length = 24", "max_length = 3"))
    result = sdk.apply(load(path))
    assert result.failed
    error = result.failed[0].error
    assert "sft.jsonl:1:" in error and "max_length = 3" in error and "Traceback" not in error


def test_finetune_of_a_finetune_keeps_the_merged_base_in_its_artifact(tmp_path: Path) -> None:
    import torch

    from sdk.backends.models import handle
    from sdk.backends.models import load as load_model

    path = _recipe(tmp_path, '''
  finetune first { from = base_model.local  data = dataset.qa  max_steps = 2  batch_size = 2 }
  finetune second { from = finetune.first  data = dataset.qa  max_steps = 2  batch_size = 2  merge = true }
''')
    _apply_ok(path)
    second = _artifact(path, "finetune.second")
    assert second.outputs["base"] == "base" and second.outputs["base_source"] == "artifact"
    h = handle(second)
    assert h.model == str((second.path / "base").resolve())
    model, tok = load_model(h)
    merged, _ = load_model(handle(Artifact("x", second.path, {"outputs": {"model": "merged"}})))
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, merged(ids).logits, atol=1e-4)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What starts a SIP call?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 3


def test_a_model_folder_removed_after_it_was_made_is_noticed_and_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text(SAMPLE_TEXT * 6)
    pretrain = '''
  corpus docs { paths = ["corpus/*.txt"]  split = { by = word, length = 60, overlap = 0 } }
  pretrain more { from = base_model.local  corpus = corpus.docs  max_steps = 1  batch_size = 2  block_size = 32 }
'''
    path = _recipe(tmp_path, pretrain)
    _apply_ok(path)  # continued pre-training of the local model writes pretrain.more's model
    pre = _artifact(path, "pretrain.more")
    assert pre.metrics["steps"] == 1 and pre.metrics["perplexity_before"] > 1 and pre.metrics["perplexity_after"] > 1
    shutil.rmtree(pre.path / "model")  # ... and then the folder disappears behind the workspace's back
    path = _recipe(tmp_path, pretrain + "  finetune sip { from = pretrain.more  data = dataset.qa  max_steps = 1 }\n")
    step = sdk.plan(load(path)).step("pretrain.more")  # the manifest's sizes say what is gone
    assert step.reason.startswith("artifact damaged: model/") and step.reason.endswith("is missing")
    result = sdk.apply(load(path))
    assert result.ok and {"pretrain.more", "finetune.sip"} <= set(result.ran)


def test_an_error_inside_a_torchrun_rank_reaches_the_user_as_its_message(tmp_path: Path) -> None:
    path = _recipe(tmp_path, '''
  finetune ddp { from = base_model.local  data = dataset.qa  max_length = 3  max_steps = 1  batch_size = 2 }
  compute { launcher = torchrun  num_processes = 2  cpu = true  main_process_port = 29533 }
''')
    result = sdk.apply(load(path))
    assert result.failed
    error = result.failed[0].error
    assert "sft.jsonl:1:" in error and "max_length = 3" in error and "exit" not in error


def test_continued_pretraining_with_a_block_longer_than_the_context_names_block_size(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text(SAMPLE_TEXT * 6)
    path = _recipe(tmp_path, '''
  corpus docs { paths = ["corpus/*.txt"] }
  pretrain more { from = base_model.local  corpus = corpus.docs  max_steps = 1  block_size = 512 }
''')
    result = sdk.apply(load(path))
    assert [o.id for o in result.failed] == ["pretrain.more"]
    assert "block_size = 512 exceeds the context" in result.failed[0].error and "(128 positions)" in result.failed[0].error


def test_accelerate_launch_runs_a_finetune_end_to_end(tmp_path: Path) -> None:
    # one process on the CPU (distributed_type NO): the real `accelerate launch --config_file ... -m` path
    path = _recipe(tmp_path, '''
  finetune acc { from = base_model.local  data = dataset.qa  max_steps = 2  batch_size = 2 }
  compute { launcher = accelerate  num_processes = 1  cpu = true }
''')
    _apply_ok(path)
    art = _artifact(path, "finetune.acc")
    assert art.metrics["steps"] == 2 and (art.path / "adapter" / "adapter_model.safetensors").exists()
    assert (art.path / "loss.png").exists()
