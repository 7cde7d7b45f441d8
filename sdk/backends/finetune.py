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
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.errors import DslError


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r.pop("_line", None)
    return rows


def to_prompt_completion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        msgs = r["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        out.append({"prompt": msgs[:last], "completion": [msgs[last]]})
    return out


def finetune_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sdk.backends import training as T
    from sdk.backends.models import ModelHandle, load

    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    h = ModelHandle(**job["base"])
    tokenizer = AutoTokenizer.from_pretrained(h.tokenizer_path)
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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
    else:
        cfg_extra["dataset_text_field"] = "text"
        mode = "text"
    if not train_rows:
        raise DslError(f"{job['step_id']}: the training set is empty")
    kwargs: dict[str, Any] = {"revision": h.revision}
    if block["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.float32,
                                                           bnb_4bit_use_double_quant=False)
    if h.adapter:
        model, _ = load(h, merge=True)
        model.train()
    else:
        model = AutoModelForCausalLM.from_pretrained(h.model, **kwargs)
    peft_config = None
    if block["method"] in ("lora", "qlora"):
        from peft import LoraConfig

        lora = block.get("lora") or {}
        targets = lora.get("target_modules", "all_linear")
        peft_config = LoraConfig(r=lora.get("rank", 16), lora_alpha=lora.get("alpha", 32),
                                 lora_dropout=lora.get("dropout", 0.05), task_type="CAUSAL_LM",
                                 target_modules="all-linear" if targets == "all_linear" else list(targets))
    args = T.training_args(block, Path(job["checkpoint_dir"]), has_eval=bool(val_rows), distributed=T.distributed_args())
    config = SFTConfig(**args, max_length=block["max_length"], packing=block["packing"], **cfg_extra)
    total = block.get("max_steps") or max(1, int(len(train_rows) / (block["batch_size"] * block["gradient_accumulation"]) * block["epochs"]))
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(train_rows),
                         eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[T.progress_callback(progress, f"{job['step_id']}: fine-tuning ({block['method']})", total)])
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    if resume:
        log(f"resuming from {Path(resume).name}")
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               "train_rows": len(train_rows), "loss_mode": mode,
                               "resumed_from": Path(resume).name if resume else None}
    if val_rows:
        metrics["eval_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    tokens = sum(len(tokenizer(json.dumps(r))["input_ids"]) for r in train_rows[:50]) / max(1, min(50, len(train_rows)))
    metrics["tokens_per_second"] = round(tokens * block["batch_size"] * metrics["steps"] / max(seconds, 1e-9), 1)
    history = T.loss_history(trainer)
    eval_history = [{"step": int(r["step"]), "loss": float(r["eval_loss"])} for r in trainer.state.log_history if "eval_loss" in r]
    out = Path(job["out_dir"])
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
                merged, _ = load(ModelHandle(model=h.model, adapter=str(out / "adapter"), revision=h.revision), merge=True)
                merged.save_pretrained(str(out / "merged"))
                tokenizer.save_pretrained(str(out / "merged"))
                T.write_model_card(out / "merged", f"{job['step_id']} (merged)", h.model, job.get("data_hashes", {}),
                                   _params(block), metrics)
        T.write_loss_curve(out, history, f"{job['step_id']} fine-tuning loss", eval_history)
        T.write_model_card(card_dir, job["step_id"], h.model, job.get("data_hashes", {}), _params(block), metrics)
    return {"metrics": metrics}


def _params(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "compute"}


def _chat_template(spec: Any, block: Any) -> Optional[str]:
    from sdk.spec import FileRef

    value = block.chat_template
    if value is None:
        return None
    return value.read(spec.base_dir) if isinstance(value, FileRef) else str(value)


class FinetuneBackend(Backend):
    name = "trl"
    version = "1"
    kinds = ("finetune",)
    requires = ("torch", "transformers", "trl", "peft", "datasets")
    install_hint = "pip install 'domain-dsl[train]'"

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

        block: Any = ctx.block
        problems = []
        if block.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            problems.append(Problem(path=ctx.path + ("method",), message="method = qlora needs bitsandbytes, which is not installed",
                                    hint="pip install bitsandbytes (or 'domain-dsl[train]'), or use method = lora"))
        base = ctx.spec.get(block.from_) if ctx.spec.has(block.from_) else None
        data = ctx.spec.get(block.data) if ctx.spec.has(block.data) else None
        if base is not None and getattr(base, "path", None) and getattr(data, "format", "chat") == "chat" \
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
        from sdk.backends import training as T
        from sdk.backends.models import handle
        from sdk.backends.pretrain import _compute

        block: Any = ctx.block
        base = ctx.input(block.from_)
        data = ctx.input(block.data)
        h = handle(base)
        template = _chat_template(ctx.spec, block)
        if template is None and block.from_.kind == "base_model":
            template = _chat_template(ctx.spec, ctx.spec.get(block.from_))
        job = {
            "kind": "finetune", "step_id": ctx.step_id, "out_dir": str(ctx.out_dir),
            "checkpoint_dir": str(ctx.checkpoint_dir), "block": block.model_dump(mode="json", exclude={"backend"}),
            "base": {"model": h.model, "adapter": h.adapter, "tokenizer": h.tokenizer, "revision": h.revision},
            "train": str(data.path / data.outputs["train"]),
            "validation": str(data.path / data.outputs["validation"]) if data.outputs.get("validation") else None,
            "format": data.outputs.get("format", "chat"), "chat_template": template,
            "data_hashes": data.manifest.get("files", {}),
        }
        compute = _compute(ctx)
        if compute and compute.get("launcher") in ("torchrun", "accelerate"):
            result = T.run_launched(job, compute, ctx.checkpoint_dir / "launch", ctx.log)
        else:
            result = T.run_job(job, ctx.progress, ctx.log)
        m = result["metrics"]
        if block.method == "full":
            outputs: dict[str, Any] = {"model": "model", "model_source": "artifact", "tokenizer": "model"}
        else:
            outputs = {"adapter": "adapter", "base": h.model, "base_source": "local" if Path(h.model).exists() else "hub",
                       "tokenizer": "adapter"}
            if block.merge:
                outputs["merged"] = "merged"
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", method=block.method)
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method}: {m['steps']} steps, loss {m['train_loss']}"
                                  + (f", eval loss {m['eval_loss']}" if "eval_loss" in m else ""))
