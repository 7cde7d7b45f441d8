"""Plan-time checks of the training backends (no training): they name the spec attribute at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.planner import PlanProblems
from tests._tiny import make_tiny_model


def test_block_size_beyond_the_architecture_context_is_caught_at_plan_time(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("some text " * 50)
    path = tmp_path / "r.dsl"
    path.write_text('''domain t {
  base_model tiny { architecture = llama { layers = 2, hidden = 64, heads = 4, vocab = 400, context = 128 } }
  corpus docs { paths = ["corpus/*.txt"] }
  pretrain base { from = base_model.tiny  corpus = corpus.docs  block_size = 512 }
}
''')
    with pytest.raises(PlanProblems) as err:
        sdk.plan(load(path))
    assert "block_size = 512 exceeds the context of base_model.tiny (128)" in str(err.value)
    path.write_text(path.read_text().replace("block_size = 512", "block_size = 128"))
    assert sdk.plan(load(path)) is not None


def test_instruction_data_needs_a_chat_template_too(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "model" / "chat_template.jinja").unlink(missing_ok=True)
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "Say yes", "output": "yes"}) + "\n")
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}")
    path = tmp_path / "r.dsl"
    path.write_text('''domain t {
  base_model local { path = "model" }
  dataset d { path = "d.jsonl"  format = instruction }
  finetune ft { from = base_model.local  data = dataset.d }
}
''')
    with pytest.raises(PlanProblems, match="has no chat template and the spec gives none"):
        sdk.plan(load(path))
    path.write_text(path.read_text().replace("data = dataset.d }", 'data = dataset.d  chat_template = file("t.jinja") }'))
    assert sdk.plan(load(path)) is not None


def test_activation_checkpointing_is_off_on_cpu_unless_asked_and_never_warns() -> None:
    import warnings

    from trl import SFTConfig

    from sdk.backends.training import common as T

    block = {"batch_size": 2, "gradient_accumulation": 1, "learning_rate": 1e-3, "weight_decay": 0.0,
             "warmup_ratio": 0.0, "scheduler": "linear", "seed": 0, "logging_steps": 1, "save_steps": 10,
             "max_steps": 2, "epochs": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        off = SFTConfig(**T.training_args(block, Path("/tmp/x"), has_eval=False, fine_tuning=True))
        on = SFTConfig(**T.training_args({**block, "compute": {"activation_checkpointing": True}}, Path("/tmp/x"),
                                         has_eval=False, fine_tuning=True))
    assert off.gradient_checkpointing is False  # TRL would turn it on; on a CPU it only costs time
    assert on.gradient_checkpointing is True
