"""What the steps that tune a model further (align, reward) share: loading the model to tune, and saving what they
trained (all weights, or an adapter, plus an optional merged copy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sdk import envchecks as E
from sdk.backends.models import ModelHandle, load, recipe_template, recorded_template, sized_to_its_weights
from sdk.backends.training.launch import is_main_process
from sdk.errors import DataError, DslError
from sdk.spec import Lora
from sdk.spec.blocks.pretrain import compute_for
from sdk.templating import tokenizer_chat


def load_for_tuning(job: dict[str, Any], tune: str) -> tuple[Any, Any, str, Any]:
    """(model, tokenizer, base_path, handle) for a step that tunes ``job["base"]`` further (align, reward)."""
    tokenizer, h = tokenizer_for(job)
    model, base_path = model_for(job, tune, tokenizer, h)
    return model, tokenizer, base_path, h


def chat_template(ctx: Any, block: Any, base: Any) -> Optional[str]:
    """The chat template a training step trains with: its own block's, else the one its input model recorded in
    its artifact (a base_model's), never the recipe's current block of that input; None: the tokenizer's own."""
    own = recipe_template(ctx.spec, block)
    return own if own is not None else recorded_template(base)


def _is_chat(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def trl_conversations(row: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], bool, bool]]:
    """``(what, messages, add_generation_prompt, continue_final_message)`` for each conversation TRL renders from
    one row with the chat template (TRL 1.x data prep): ``messages`` whole (SFT); a chat ``prompt`` alone with the
    generation prompt (DPO, KTO, SFT prompt-completion, GRPO), or left open when it ends with an assistant turn
    (ORPO and CPO); and each answer *joined to its prompt*, ``prompt + chosen``, ``prompt + rejected``, ``prompt +
    completion`` as one conversation (an answer alone only where the row has no prompt)."""
    out: list[tuple[str, list[dict[str, Any]], bool, bool]] = []
    if _is_chat(row.get("messages")):
        out.append(("messages", row["messages"], False, False))
    prompt = row.get("prompt")
    chat_prompt = _is_chat(prompt)
    if chat_prompt:
        out.append(("prompt", prompt, True, False))
        if prompt[-1].get("role") == "assistant":
            out.append(("prompt", prompt, False, True))
    for key in ("chosen", "rejected", "completion"):
        value = row.get(key)
        if _is_chat(value):
            out.append((f"prompt + {key}", [*prompt, *value], False, False) if chat_prompt else
                       (key, value, False, False))
    return out


def check_chat_rows(tokenizer: Any, rows: Any, step_id: str, source: Optional[str] = None) -> None:
    """Every conversation TRL will render from ``rows`` (:func:`trl_conversations`: a preference row's prompt
    joined to each answer, as TRL joins them) rendered once by our sandbox (:func:`sdk.templating.tokenizer_chat`,
    with its budgets) before TRL renders them with transformers' own jinja environment: a hostile chat template (a
    loop without end, a huge value, an escape, also one that misbehaves only on the joined conversation) is a
    DslError naming the step and the row (``source:LINE`` when the rows' file is given), never a hang in
    training."""
    if not getattr(tokenizer, "chat_template", None):
        return
    for i, row in enumerate(rows, 1):
        line = row.get("_line", i)
        for what, messages, gen, cont in trl_conversations(row):
            where = f"{step_id}: the chat template ({what})" if source else \
                f"{step_id}: the chat template (training row {line}, {what})"
            try:
                tokenizer_chat(tokenizer, messages, add_generation_prompt=gen, continue_final_message=cont,
                               where=where)
            except DslError as e:
                if source is None:
                    raise
                raise DataError(source, line, str(e)) from None


def tokenizer_for(job: dict[str, Any]) -> tuple[Any, Any]:
    """(tokenizer, handle) of the model a training job starts from: with the recipe's chat template and a pad
    token."""
    from transformers import AutoTokenizer

    h = ModelHandle(**job["base"])
    tokenizer = AutoTokenizer.from_pretrained(h.tokenizer_path)
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, h


def model_for(job: dict[str, Any], tune: str, tokenizer: Any, h: Any) -> tuple[Any, str]:
    """(model, base_path) to train with ``tune`` (full, lora, qlora): 4-bit weights for qlora, the base model's
    dtype. A LoRA fine-tune is merged first; with an adapter to train on top, the merged model is kept in the
    artifact as ``base/`` (the new adapter's base; written by rank 0 of a launched run)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"revision": h.revision}
    if job.get("dtype") and job["dtype"] != "auto":  # the base_model block's dtype
        kwargs["dtype"] = getattr(torch, job["dtype"])
    if tune == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.float32)
    base_path = h.model  # the model the new adapter applies to
    if not h.adapter:
        sized_to_its_weights(h.model)  # a config.json declaring 1e6 layers is refused, not initialised
        return AutoModelForCausalLM.from_pretrained(h.model, **kwargs), base_path
    model, _ = load(h, merge=True)  # tuning a fine-tune: train on the merged model
    model.train()
    if tune != "full":
        base_path = str(Path(job["out_dir"]) / "base")
        if is_main_process():
            model.save_pretrained(base_path)
            tokenizer.save_pretrained(base_path)
    return model, base_path


def save_tuned(trainer: Any, tokenizer: Any, out: Path, *, adapter: bool, merge: bool, base_path: str,
               handle: Any) -> Path:
    """Write what a tuning step trained: ``model/`` (all weights) or ``adapter/``, plus ``merged/`` when asked;
    returns the folder that gets the model card."""
    folder = out / ("adapter" if adapter else "model")
    trainer.save_model(str(folder))  # every rank calls it (sharded states gather); the Trainer writes on rank 0
    if not is_main_process():
        return folder
    tokenizer.save_pretrained(str(folder))
    if adapter and merge:
        merged, _ = load(ModelHandle(model=base_path, adapter=str(folder),
                                     revision=None if handle.adapter else handle.revision), merge=True)
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
    return folder


def job_of(ctx: Any, kind: str, block: Any, h: Any, base: Any, template: Any) -> dict[str, Any]:
    """The fields every tuning job shares: where it writes, its block (with the compute block it launches with),
    the model it tunes and how to name it. Plain JSON: a launched run gives it to each rank in a file."""
    compute = compute_for(ctx.spec, block)
    return {"kind": kind, "step_id": ctx.step_id, "out_dir": str(ctx.out_dir),
            "checkpoint_dir": str(ctx.checkpoint_dir),
            "block": {**block.model_dump(mode="json", exclude={"backend"}),
                      "compute": compute.model_dump(mode="json") if compute is not None else {}},
            "base": {"model": h.model, "adapter": h.adapter, "tokenizer": h.tokenizer, "revision": h.revision},
            "base_name": f"{block.from_} ({h.model}" + (f" + adapter {h.adapter}" if h.adapter else "") + ")",
            "dtype": base.outputs.get("dtype", "auto"), "chat_template": template}


def tuned_outputs(trains: str, merge: bool, h: Any, base_in_artifact: bool) -> dict[str, Any]:
    """The manifest outputs of a step that trained a model (``trains``: full, lora or qlora), in the shape
    sdk.backends.models.handle() reads: all weights, or an adapter over its base (kept in the artifact when it was
    a merged earlier fine-tune), plus ``merged/`` when asked."""
    if trains == "full":
        outputs: dict[str, Any] = {"model": "model", "model_source": "artifact", "tokenizer": "model"}
    elif base_in_artifact:
        outputs = {"adapter": "adapter", "base": "base", "base_source": "artifact", "tokenizer": "adapter"}
    else:
        outputs = {"adapter": "adapter", "base": h.model, "base_source": "local" if Path(h.model).is_dir() else "hub",
                   "tokenizer": "adapter"}
        if h.revision:
            outputs["revision"] = h.revision
    if trains != "full" and merge:
        outputs["merged"] = "merged"
    return outputs


def peft_lora(settings: Any) -> Any:
    """PEFT's LoraConfig from a block's ``lora`` settings (as dumped into a job); the defaults are the spec's own
    (sdk.spec.Lora), never restated here."""
    from peft import LoraConfig

    lora = Lora.model_validate(settings or {})
    targets = "all-linear" if lora.target_modules == "all_linear" else list(lora.target_modules)
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                      target_modules=targets)


class TrainingBackend:
    """Mixin of the backends that train a model (finetune, align, reward): the packages they need, and the compute
    checks (CUDA, launchers) on top of the base environment checks."""

    requires = ("torch", "transformers", "trl", "peft", "datasets")
    install_hint = "pip install 'domain-dsl[train]'"

    def environment(self, ctx: Any) -> list:
        return super().environment(ctx) + E.compute(ctx)  # type: ignore[misc]


def lora_config(block: dict[str, Any]) -> Any:
    """The PEFT LoRA config of a job's block (None for tune = full)."""
    return None if block["tune"] == "full" else peft_lora(block.get("lora"))


def params(block: dict[str, Any]) -> dict[str, Any]:
    """The block's settings logged as run parameters (compute is logged apart)."""
    return {k: v for k, v in block.items() if k != "compute"}


def compute_of(ctx: Any) -> dict[str, Any] | None:
    """The step's compute block (its own, else the recipe's) as JSON, or None."""
    compute = compute_for(ctx.spec, ctx.block)
    return compute.model_dump(mode="json") if compute is not None else None
