"""The ``finetune`` step: supervised fine-tuning with TRL's SFTTrainer, fully or through LoRA / QLoRA (4-bit
NF4 via bitsandbytes) adapters from PEFT.

Chat data trains with the loss on assistant tokens: through TRL's ``assistant_only_loss`` when the chat template
marks assistant turns with ``{% generation %}``, otherwise as prompt/completion pairs (everything before the last
assistant turn is the prompt, which carries no loss). The tokenizer and its chat template are saved beside the
adapter, so serving and evaluation use the template training used.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Optional

from sdk.backends import charts
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.models import ModelHandle, handle, load
from sdk.backends.training import common as T
from sdk.backends.training import tuning
from sdk.backends.training.tuning import TrainingBackend
from sdk.errors import DataError, DslError
from sdk.spec import Problem


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of the dataset step's train/validation file; ``_line`` (the source line) is kept: the trainer drops
    it before batching, and it names the rows lost to truncation."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows, start=1):
        r.setdefault("_line", i)
    return rows


def to_prompt_completion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        msgs = r["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        out.append({"prompt": msgs[:last], "completion": [msgs[last]], "_line": r["_line"]})
    return out


def _shown(path: Optional[str]) -> str:
    if not path:
        return "the dataset"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_truncation(job: dict[str, Any], trainer: Any, rows: list[dict[str, Any]], mode: str,
                     log: Callable[[str], None]) -> int:
    """Rows the trainer dropped because truncation to max_length left them no token to learn from: an error
    naming FILE:LINE when none is left, else a warning; returns how many were dropped."""
    block = job["block"]
    data = trainer.train_dataset
    if len(data) == 0:
        lines = [r["_line"] for r in rows]
        what = "assistant token" if mode in ("assistant_only_loss", "prompt_completion") else "token"
        raise DataError(_shown(job.get("source")), lines[0] if lines else None,
                        f"no {what} is left to train on after truncation to max_length = {block['max_length']} "
                        f"(every one of the {len(rows)} training rows was dropped)",
                        f"raise max_length in {job['step_id']}, or shorten the prompts")
    if block["packing"] or "_line" not in data.column_names:
        return 0
    kept = set(data["_line"])
    dropped = [r["_line"] for r in rows if r["_line"] not in kept]
    if dropped:
        shown = ", ".join(f"{_shown(job.get('source'))}:{n}" for n in dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        log(f"warning: {len(dropped)} of {len(rows)} training rows have no token to learn from after truncation "
            f"to max_length = {block['max_length']} and were dropped: {shown}")
    return len(dropped)


def padding_free_support(model: Any) -> Optional[str]:
    """None when ``model`` can train on padding-free batches (rows flattened into one sequence, position ids per
    example, no attention across examples), else why not. Flash attention's varlen kernels take the sequence
    boundaries directly; the sdpa, eager and flex paths need a model whose masks come from transformers'
    ``create_causal_mask``, which turns position ids that restart at 0 into a block-diagonal causal mask."""
    import sys

    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "an encoder-decoder model"
    if str(impl).startswith(("flash_attention", "kernels-community/flash")):
        return None
    if impl not in ("sdpa", "eager", "flex_attention"):
        return f"attention implementation {impl}"
    if getattr(sys.modules.get(type(model).__module__), "create_causal_mask", None) is None:
        return f"{type(model).__name__} builds its own attention masks"
    return None


def use_padding_free(trainer: Any) -> None:
    """Batches of the same rows, flattened without padding (TRL's padding-free collator): the loss of every row is
    the padded batch's, only the pad tokens' compute is gone. TRL's ``padding_free`` config flag cannot do this
    without packing (it refuses ``max_length``, which the truncation of the rows needs), so the collator built
    for the padded path is switched after TRL prepared and truncated the data."""
    collator = trainer.data_collator
    if not hasattr(collator, "padding_free"):
        raise DslError("internal: TRL's data collator has no padding_free switch")
    collator.padding_free = True
    trainer.padding_free = True


def finetune_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    from trl import SFTConfig, SFTTrainer

    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    tokenizer, h = tuning.tokenizer_for(job)
    train_rows = read_rows(Path(job["train"]))
    val_rows = read_rows(Path(job["validation"])) if job.get("validation") else []
    cfg_extra: dict[str, Any] = {}
    if job["format"] == "chat":
        if not tokenizer.chat_template:
            raise DslError(f"{job['step_id']}: the tokenizer of {h.model} has no chat template and the spec gives "
                           "none: set chat_template in the finetune block")
        marked = "{% generation %}" in tokenizer.chat_template or "{%- generation %}" in tokenizer.chat_template
        if block["assistant_only_loss"] and marked:
            cfg_extra["assistant_only_loss"] = True
            mode = "assistant_only_loss"
        elif block["assistant_only_loss"]:
            train_rows, val_rows = to_prompt_completion(train_rows), to_prompt_completion(val_rows)
            mode = "prompt_completion"
        else:
            mode = "full_sequence"
        source = _shown(job["source"]) if job.get("source") else None  # the rows as TRL will render them
        tuning.check_chat_rows(tokenizer, [*train_rows, *val_rows], job["step_id"], source)
    else:
        cfg_extra["dataset_text_field"] = "text"
        mode = "text"
    if not train_rows:
        raise DslError(f"{job['step_id']}: the training set is empty")
    out = Path(job["out_dir"])
    model, base_path = tuning.model_for(job, block["method"], tokenizer, h)
    peft_config = None
    if block["method"] in ("lora", "qlora"):
        peft_config = tuning.peft_lora(block.get("lora"))
    args = T.training_args(block, Path(job["checkpoint_dir"]), has_eval=bool(val_rows), distributed=T.distributed_args(),
                           fine_tuning=True)
    config = SFTConfig(**args, max_length=block["max_length"], packing=block["packing"], **cfg_extra)
    padding_free = False
    if block.get("padding_free", True) and not block["packing"]:
        why_not = padding_free_support(model)
        padding_free = why_not is None
        if why_not:
            log(f"info: padding-free batches are off for {job['step_id']} ({why_not}): rows are padded instead")
    total = block.get("max_steps") or max(1, int(len(train_rows) / (block["batch_size"] * block["gradient_accumulation"]) * block["epochs"]))
    try:
        trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(train_rows),
                             eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
                             processing_class=tokenizer, peft_config=peft_config,
                             callbacks=[T.progress_callback(progress, f"{job['step_id']}: fine-tuning ({block['method']})",
                                                            total, tokens=lambda: getattr(trainer, "_total_train_tokens", 0))])
    except RuntimeError as e:
        if "no assistant tokens" not in str(e):
            raise
        raise DslError(f"{job['step_id']}: a training row renders no assistant tokens with this chat template: its "
                       "{% generation %} markers must wrap the assistant content; fix chat_template") from None
    if padding_free:
        use_padding_free(trainer)
    dropped = check_truncation(job, trainer, train_rows, mode, log)
    has_eval = trainer.eval_dataset is not None and len(trainer.eval_dataset) > 0
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    output, seconds = T.train(trainer, resume, log)
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               "train_rows": len(train_rows), "rows_dropped_by_truncation": dropped, "loss_mode": mode,
                               "batches": "packed" if block["packing"] else ("padding_free" if padding_free else "padded"),
                               "resumed_from": Path(resume).name if resume else None, "kernels": T.kernels_used(block)}
    if has_eval:
        metrics["eval_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    # tokens seen in this run (all ranks; TRL counts them per batch), over the training time
    tokens = getattr(trainer, "_total_train_tokens", 0) or 0
    metrics["train_tokens"] = int(tokens)
    metrics["tokens_per_second"] = round(tokens / max(seconds, 1e-9), 1)
    history = T.loss_history(trainer)
    eval_history = [{"step": int(r["step"]), "loss": float(r["eval_loss"])} for r in trainer.state.log_history if "eval_loss" in r]
    if T.is_main_process():
        if peft_config is None:
            trainer.save_model(str(out / "model"))
            tokenizer.save_pretrained(str(out / "model"))
            card_dir = out / "model"
        else:
            trainer.model.save_pretrained(str(out / "adapter"))
            tokenizer.save_pretrained(str(out / "adapter"))
            card_dir = out / "adapter"
            if block["merge"]:
                merged, _ = load(ModelHandle(model=base_path, adapter=str(out / "adapter"),
                                             revision=None if h.adapter else h.revision), merge=True)
                merged.save_pretrained(str(out / "merged"))
                tokenizer.save_pretrained(str(out / "merged"))
                T.write_model_card(out / "merged", f"{job['step_id']} (merged)", job.get("base_name", h.model),
                                   job.get("data_hashes", {}), tuning.params(block), metrics)
        charts.write_loss_curve(out, history, f"{job['step_id']} fine-tuning loss", eval_history)
        T.write_model_card(card_dir, job["step_id"], job.get("base_name", h.model), job.get("data_hashes", {}),
                           tuning.params(block), metrics)
    return {"metrics": metrics, "base_in_artifact": bool(h.adapter) and peft_config is not None}


class FinetuneBackend(TrainingBackend, Backend):
    name = "trl"
    version = "2"  # 2: padding-free batches by default
    kinds = ("finetune",)

    def check(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        problems = []
        if block.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            problems.append(Problem(path=ctx.path + ("method",), message="method = qlora needs bitsandbytes, which is not installed",
                                    hint="pip install bitsandbytes (or 'domain-dsl[train]'), or use method = lora"))
        base = ctx.spec.get(block.from_) if ctx.spec.has(block.from_) else None
        data = ctx.spec.get(block.data) if ctx.spec.has(block.data) else None
        if base is not None and getattr(base, "path", None) and getattr(data, "format", "chat") != "text" \
                and block.chat_template is None and getattr(base, "chat_template", None) is None:
            config = ctx.spec.resolve_path(base.path) / "tokenizer_config.json"
            if config.is_file():
                try:
                    has_template = bool(json.loads(config.read_text()).get("chat_template")) or \
                        (config.parent / "chat_template.jinja").exists()
                except (OSError, ValueError):
                    has_template = True
                if not has_template:
                    problems.append(Problem(path=ctx.path + ("from",),
                                            message=f"the tokenizer of {block.from_} has no chat template and the spec gives none",
                                            hint="set chat_template = file(\"template.jinja\") in the finetune block"))
        return problems

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        base = ctx.input(block.from_)
        data = ctx.input(block.data)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):  # the earlier fine-tune already wrote its merged model
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = tuning.chat_template(ctx, block, base)
        compute = tuning.compute_of(ctx)
        job = {
            "kind": "finetune", "step_id": ctx.step_id, "out_dir": str(ctx.out_dir),
            "checkpoint_dir": str(ctx.checkpoint_dir),
            "block": {**block.model_dump(mode="json", exclude={"backend"}), "compute": compute or {}},
            "base": {"model": h.model, "adapter": h.adapter, "tokenizer": h.tokenizer, "revision": h.revision},
            "base_name": f"{block.from_} ({h.model}" + (f" + adapter {h.adapter}" if h.adapter else "") + ")",
            "train": str(data.path / data.outputs["train"]),
            "validation": str(data.path / data.outputs["validation"]) if data.outputs.get("validation") else None,
            "source": data.outputs.get("source"), "dtype": base.outputs.get("dtype", "auto"),
            "format": data.outputs.get("format", "chat"), "chat_template": template,
            "data_hashes": data.manifest.get("files", {}),
        }
        result = T.run_step_job(ctx, job, finetune_job, __name__)
        m = result["metrics"]
        outputs = tuning.tuned_outputs(block.method, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", method=block.method)
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method}: {m['steps']} steps, loss {m['train_loss']}"
                                  + (f", eval loss {m['eval_loss']}" if "eval_loss" in m else ""))


if __name__ == "__main__":  # one rank of a launched run: python -m sdk.backends.training.finetune JOB.json
    from sdk.backends.training.common import main

    main(finetune_job)
