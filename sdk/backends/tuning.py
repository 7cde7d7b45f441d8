"""What the steps that tune a model further (align, reward) share: loading the model to tune, and saving what they
trained (all weights, or an adapter, plus an optional merged copy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_for_tuning(job: dict[str, Any], tune: str) -> tuple[Any, Any, str, Any]:
    """(model, tokenizer, base_path, handle) for a step that tunes ``job["base"]`` further (align, reward): the
    recipe's chat template, a pad token, 4-bit weights for qlora. A LoRA fine-tune is merged first; with an adapter
    to train on top, the merged model is kept in the artifact as ``base/`` (the new adapter's base)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdk.backends.models import ModelHandle, load

    h = ModelHandle(**job["base"])
    tokenizer = AutoTokenizer.from_pretrained(h.tokenizer_path)
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"revision": h.revision}
    if job.get("dtype") and job["dtype"] != "auto":
        kwargs["dtype"] = getattr(torch, job["dtype"])
    if tune == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.float32)
    out = Path(job["out_dir"])
    base_path = h.model
    if h.adapter:
        model, _ = load(h, merge=True)
        model.train()
        if tune != "full":
            base_path = str(out / "base")
            model.save_pretrained(base_path)
            tokenizer.save_pretrained(base_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(h.model, **kwargs)
    return model, tokenizer, base_path, h


def save_tuned(trainer: Any, tokenizer: Any, out: Path, *, adapter: bool, merge: bool, base_path: str,
               handle: Any) -> Path:
    """Write what a tuning step trained: ``model/`` (all weights) or ``adapter/``, plus ``merged/`` when asked;
    returns the folder that gets the model card."""
    from sdk.backends.models import ModelHandle, load

    folder = out / ("adapter" if adapter else "model")
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(str(folder))
    if adapter and merge:
        merged, _ = load(ModelHandle(model=base_path, adapter=str(folder),
                                     revision=None if handle.adapter else handle.revision), merge=True)
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
    return folder
