"""The ``pretrain`` step: from scratch (a BPE tokenizer and a new Llama, when the base model has an
``architecture``) or continued pre-training of an existing model, on the corpus packed into fixed-length blocks.
Held-out perplexity is measured before and after on a slice of the corpus that is not trained on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from sdk import envchecks as E
from sdk.backends import charts
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.models import ModelHandle, handle, load
from sdk.backends.training import common as T
from sdk.backends.training import tuning
from sdk.errors import DslError
from sdk.spec import Problem


def split_texts(texts: list[str], holdout: float) -> tuple[list[str], list[str]]:
    """Deterministic by content hash; at least one text stays in training."""
    train, held = [], []
    for t in texts:
        bucket = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < holdout else train).append(t)
    if not train:
        train, held = held[:1], held[1:]
    if not held and holdout > 0 and len(train) > 1:
        held = [train.pop()]
    return train, held


def pretrain_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    texts = [json.loads(line)["content"] for line in Path(job["chunks"]).read_text(encoding="utf-8").split("\n") if line.strip()]
    train_texts, held_texts = split_texts(texts, block["holdout"])
    if job.get("architecture"):
        arch = job["architecture"]
        tokenizer = T.train_tokenizer(train_texts, int(arch["vocab"]))
        model = T.build_model(arch, tokenizer, block["seed"])
        context = int(arch["context"])
        base_name = f"new llama ({arch['layers']} layers, hidden {arch['hidden']})"
    else:
        model, tokenizer = load(ModelHandle(**job["base"]))
        model.train()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        context = int(getattr(model.config, "max_position_embeddings", 1024) or 1024)
        base_name = job["base"]["model"]
    block_size = int(block.get("block_size") or min(context, 1024))
    if block_size > context:
        raise DslError(f"{job['step_id']}: block_size = {block_size} exceeds the context of {base_name} ({context} "
                       "positions): lower block_size")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(ts: list[str]) -> list[list[int]]:  # batched through datasets (fast tokenizers work in batches)
        if not ts:
            return []
        ds = datasets.Dataset.from_dict({"text": ts}).map(
            lambda batch: {"input_ids": [ids + eos for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]},
            batched=True, remove_columns=["text"], keep_in_memory=True)
        return [list(ids) for ids in ds["input_ids"]]

    train_ids = encode(train_texts)
    train_blocks = T.pack(train_ids, block_size)
    held_ids = encode(held_texts)
    held_blocks = T.pack(held_ids, block_size) or ([sum(held_ids, [])[:block_size]] if sum(map(len, held_ids)) > 1 else [])
    if not train_blocks:
        raise DslError(f"{job['step_id']}: the corpus is too small for block_size = {block_size} "
                       f"({sum(map(len, train_ids))} training tokens): lower block_size or add text")
    ppl_before = T.perplexity(model, held_blocks)
    dataset = datasets.Dataset.from_dict({"input_ids": train_blocks})
    args = TrainingArguments(**T.training_args(block, Path(job["checkpoint_dir"]), has_eval=False,
                                               distributed=T.distributed_args()))
    total = block.get("max_steps") or max(1, int(len(train_blocks) / (block["batch_size"] * block["gradient_accumulation"]) * block["epochs"]))
    per_step = block["batch_size"] * block["gradient_accumulation"] * block_size * args.world_size
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    first_step = int(Path(resume).name.split("-")[1]) if resume else 0
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      callbacks=[T.progress_callback(progress, f"{job['step_id']}: pretraining", total,
                                                     tokens=lambda: (trainer.state.global_step - first_step) * per_step)])
    output, seconds = T.train(trainer, resume, log)
    ppl_after = T.perplexity(model, held_blocks)
    history = T.loss_history(trainer)
    tokens = (trainer.state.global_step - first_step) * per_step  # trained in this run
    metrics = {"train_loss": round(float(output.training_loss), 4), "steps": int(trainer.state.global_step),
               "train_seconds": round(seconds, 2), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
               "train_blocks": len(train_blocks), "holdout_blocks": len(held_blocks), "block_size": block_size,
               "perplexity_before": round(ppl_before, 3) if ppl_before else None,
               "perplexity_after": round(ppl_after, 3) if ppl_after else None,
               "resumed_from": Path(resume).name if resume else None, "kernels": T.kernels_used(block)}
    out = Path(job["out_dir"])
    if T.is_main_process():
        trainer.save_model(str(out / "model"))
        tokenizer.save_pretrained(str(out / "model"))
        charts.write_loss_curve(out, history, f"{job['step_id']} pretraining loss")
        T.write_model_card(out / "model", job["step_id"], base_name, job.get("data_hashes", {}),
                           {k: v for k, v in block.items() if k not in ("compute",)}, metrics)
    return {"metrics": metrics, "loss_history": history}


class PretrainBackend(Backend):
    name = "transformers"
    version = "2"  # 2: the built-in chat template ends an assistant turn with eos
    kinds = ("pretrain",)
    requires = ("torch", "transformers", "datasets", "tokenizers")
    install_hint = "pip install 'domain-dsl[train]'"

    def environment(self, ctx: CheckContext) -> list:
        return super().environment(ctx) + E.compute(ctx)

    def check(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        base = ctx.spec.get(block.from_) if ctx.spec.has(block.from_) else None
        arch = getattr(base, "architecture", None)
        if arch is not None and block.block_size and block.block_size > arch.context:
            return [Problem(path=ctx.path + ("block_size",),
                            message=f"block_size = {block.block_size} exceeds the context of {block.from_} ({arch.context})",
                            hint=f"use block_size <= {arch.context}, or raise context in the architecture")]
        return []

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        base = ctx.input(block.from_)
        corpus = ctx.input(block.corpus)
        job: dict[str, Any] = {
            "kind": "pretrain", "step_id": ctx.step_id, "out_dir": str(ctx.out_dir),
            "checkpoint_dir": str(ctx.checkpoint_dir), "block": block.model_dump(mode="json", exclude={"backend"}),
            "chunks": str(corpus.path / corpus.outputs.get("chunks", "chunks.jsonl")),
            "data_hashes": corpus.manifest.get("files", {}),
        }
        if base.outputs.get("model_source") == "scratch":
            job["architecture"] = base.outputs["architecture"]
        else:
            h = handle(base)
            if h.adapter:
                raise DslError(f"{ctx.step_id}: continued pre-training from an adapter is not supported; merge it first")
            T.check_model_exists(h.model, ctx.step_id, block.from_)
            job["base"] = {"model": h.model, "tokenizer": h.tokenizer, "revision": h.revision}
        compute = tuning.compute_of(ctx)
        job["block"]["compute"] = compute or {}
        result = T.run_step_job(ctx, job, pretrain_job, __name__)
        m = result["metrics"]
        return StepResult(
            metrics=m,
            outputs={"model": "model", "model_source": "artifact", "tokenizer": "model", "loss_curve": "loss.json",
                     "loss_plot": "loss.png"},
            summary=f"{m['steps']} steps, loss {m['train_loss']}, held-out perplexity "
                    f"{m['perplexity_before']} -> {m['perplexity_after']}",
        )


if __name__ == "__main__":  # one rank of a launched run: python -m sdk.backends.training.pretrain JOB.json
    from sdk.backends.training.common import main

    main(pretrain_job)
