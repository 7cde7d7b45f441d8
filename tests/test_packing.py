"""Padding-free batches (the fine-tuning default): per-example losses of a tiny model are the same whether its chat
rows are padded into a batch, flattened into one sequence with per-example position ids, or run one at a time; the
assistant-only mask is the same; a recipe trains the same losses either way; a model that cannot take them falls
back to padded batches with one info line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from tests._tiny import make_tiny_model

pytestmark = pytest.mark.slow


def _rows(n: int = 6) -> list[dict]:
    words = "the INVITE request starts a SIP call and the callee answers with 200 OK".split()
    return [{"messages": [{"role": "user", "content": f"Question {i}: " + " ".join(words[: 2 + (3 * i) % 11])},
                          {"role": "assistant", "content": " ".join(words[: 1 + (5 * i) % 13]) + "."}]}
            for i in range(n)]


def _trainer(model_dir: Path, out: Path, padding_free: bool):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sdk.backends.training.finetune import use_padding_free

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = SFTConfig(output_dir=str(out), max_length=128, assistant_only_loss=True, use_cpu=True, report_to=[],
                    per_device_train_batch_size=6)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(_rows()),
                         processing_class=tok)
    if padding_free:
        use_padding_free(trainer)
    return trainer


def _per_example_losses(model, batch) -> list[float]:
    """Mean token loss of each example, the examples told apart by the rows (padded) or the position ids that
    restart at 0 (padding-free)."""
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                            reduction="none")
    mask = labels[:, 1:] != -100
    if "position_ids" not in batch:
        return [float(nll[r][mask[r]].mean()) for r in range(labels.shape[0])]
    example = (batch["position_ids"][0, 1:] == 0).cumsum(0)
    return [float(nll[0][mask[0] & (example == e)].mean()) for e in range(int(example.max()) + 1)]


def test_padding_free_batches_keep_every_examples_loss_and_mask(tmp_path: Path) -> None:
    import torch

    model_dir = make_tiny_model(tmp_path / "model")
    padded_t = _trainer(model_dir, tmp_path / "a", padding_free=False)
    free_t = _trainer(model_dir, tmp_path / "b", padding_free=True)
    examples = [padded_t.train_dataset[i] for i in range(len(padded_t.train_dataset))]
    padded = padded_t.data_collator([dict(e) for e in examples])
    free = free_t.data_collator([dict(e) for e in examples])
    assert "attention_mask" in padded and "attention_mask" not in free
    assert free["input_ids"].shape[0] == 1
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(set(lengths)) > 2  # variable-length rows: the padded batch carries padding
    assert free["input_ids"].shape[1] == sum(lengths) < padded["input_ids"].numel()
    # the same tokens carry the loss (assistant tokens only), bar each row's first token, which no shift predicts
    assert int((padded["labels"][:, 1:] != -100).sum()) == int((free["labels"][0] != -100).sum()) > 0
    model = padded_t.model.eval()
    alone = [_per_example_losses(model, padded_t.data_collator([dict(e)]))[0] for e in examples]
    packed = _per_example_losses(model, free)
    batched = _per_example_losses(model, padded)
    assert len(packed) == len(examples)
    assert torch.allclose(torch.tensor(packed), torch.tensor(alone), atol=1e-5)
    assert torch.allclose(torch.tensor(batched), torch.tensor(alone), atol=1e-5)
    # and no attention across examples: changing the first example leaves the others' losses alone
    other = dict(free)
    other["input_ids"] = free["input_ids"].clone()
    other["input_ids"][0, : lengths[0] - 1] = 5
    assert torch.allclose(torch.tensor(_per_example_losses(model, other)[1:]), torch.tensor(packed[1:]), atol=1e-5)


def _recipe(tmp: Path, extra: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp.parent / "model" / "config.json").exists():
        make_tiny_model(tmp.parent / "model")
    (tmp / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(12)) + "\n")
    path = tmp / "r.dsl"
    path.write_text(f'domain t {{\n  base_model local {{ path = "{tmp.parent / "model"}" }}\n'
                    '  dataset qa { path = "sft.jsonl"  validation_split = 0.25 }\n'
                    f'  finetune f {{ from = base_model.local  data = dataset.qa  max_steps = 4  batch_size = 3 {extra} }}\n}}\n')
    return path


def test_a_recipe_trains_the_same_losses_padding_free_as_padded(tmp_path: Path) -> None:
    metrics = {}
    for name, extra in (("default", ""), ("padded", "padding_free = false")):
        path = _recipe(tmp_path / name, extra)
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        metrics[name] = sdk.workspace.open_workspace(path).artifact("finetune.f").manifest["metrics"]
    assert metrics["default"]["batches"] == "padding_free" and metrics["padded"]["batches"] == "padded"
    assert metrics["default"]["train_loss"] == pytest.approx(metrics["padded"]["train_loss"], abs=2e-3)
    assert metrics["default"]["eval_loss"] == pytest.approx(metrics["padded"]["eval_loss"], abs=2e-3)
    # the same rows, so the same useful (non-padding) tokens, which is what TRL counts on both sides
    assert metrics["default"]["train_tokens"] == metrics["padded"]["train_tokens"] > 0


def test_a_model_that_builds_its_own_masks_falls_back_to_padded_batches(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from sdk.backends.training.finetune import padding_free_support

    class OwnMasks(LlamaForCausalLM):  # defined here, where no create_causal_mask is imported
        pass

    model_dir = make_tiny_model(tmp_path / "model")
    assert padding_free_support(AutoModelForCausalLM.from_pretrained(model_dir)) is None
    why = padding_free_support(OwnMasks.from_pretrained(model_dir))
    assert why is not None and "OwnMasks" in why
