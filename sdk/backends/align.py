"""The ``align`` step: preference tuning with TRL's DPOTrainer (DPO and its loss variants: IPO, hinge, robust...).

Pairs are ``{"prompt", "chosen", "rejected"}`` rows, as text or as chat messages (a prompt of messages and answers
of one assistant message each; a plain-string answer next to a chat prompt becomes that message). A bad row is a
located ``FILE:LINE`` error. With ``tune = lora`` or ``qlora`` the reference model is the policy with its adapter
disabled (TRL's way: no second copy); with ``tune = full`` TRL keeps a frozen copy, or ``precompute_ref`` computes
the reference log-probs once. The outputs match ``finetune``'s, so :func:`sdk.backends.models.handle` loads them.
"""

from __future__ import annotations

import importlib.util
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.tuning import TrainingBackend
from sdk.errors import DataError, DslError


def _messages(value: Any, shown: str, line: int, key: str) -> list[dict[str, str]]:
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(shown, line, f"{key}[{i}] must be a message {{\"role\": ..., \"content\": \"...\"}}")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise DataError(shown, line, f"{key}[{i}] has role {m['role']!r}; expected system, user, assistant or tool")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def read_pairs(path: Path, shown: str, fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Preference rows, normalised: all text, or all chat (prompt messages, one assistant message per answer).
    Each keeps ``_line``. A bad row raises a DataError at ``shown:LINE``."""
    from sdk.jsonl import read_jsonl

    cols = {k: (fields or {}).get(k, k) for k in ("prompt", "chosen", "rejected")}
    rows: list[dict[str, Any]] = []
    chat_seen: tuple[int, bool] | None = None
    for line, obj in read_jsonl(path, shown):
        row: dict[str, Any] = {}
        for key, col in cols.items():
            if col not in obj:
                raise DataError(shown, line, f"missing {col!r}" + (f" (the {key} field)" if col != key else ""),
                                "a preference row has prompt, chosen and rejected")
            value = obj[col]
            if isinstance(value, str):
                if not value.strip():
                    raise DataError(shown, line, f"{col!r} is empty")
            elif isinstance(value, list) and value:
                value = _messages(value, shown, line, col)
            else:
                raise DataError(shown, line, f"{col!r} must be text or a non-empty list of chat messages, "
                                             f"not {type(value).__name__}")
            row[key] = value
        is_chat = any(isinstance(v, list) for v in row.values())
        if is_chat:
            if isinstance(row["prompt"], str):
                row["prompt"] = [{"role": "user", "content": row["prompt"]}]
            for key in ("chosen", "rejected"):
                if isinstance(row[key], str):
                    row[key] = [{"role": "assistant", "content": row[key]}]
                elif row[key][-1]["role"] != "assistant":
                    raise DataError(shown, line, f"{cols[key]!r} must end with an assistant message")
        if chat_seen is not None and chat_seen[1] != is_chat:
            raise DataError(shown, line, f"this row is {'chat' if is_chat else 'text'} but line {chat_seen[0]} is "
                                         f"{'chat' if chat_seen[1] else 'text'}: a preference file holds one shape")
        chat_seen = chat_seen or (line, is_chat)
        row["_line"] = line
        rows.append(row)
    return rows


def pair_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows, identical pairs (nothing to learn) and the length bias of chosen over rejected (a known cause of
    reward hacking: DPO learns 'longer is better' when chosen answers are mostly longer)."""
    def text(v: Any) -> str:
        return v if isinstance(v, str) else " ".join(m["content"] for m in v)

    identical = [r["_line"] for r in rows if text(r["chosen"]) == text(r["rejected"])]
    longer = sum(len(text(r["chosen"])) > len(text(r["rejected"])) for r in rows)
    return {"pairs": len(rows), "identical_pairs": len(identical), "identical_lines": identical[:10],
            "chosen_longer_share": round(longer / max(len(rows), 1), 3)}


def dpo_config(block: dict[str, Any], checkpoint_dir: Path, has_eval: bool) -> Any:
    from trl import DPOConfig

    from sdk.backends import training as T

    args = T.training_args(block, checkpoint_dir, has_eval=has_eval, fine_tuning=True)
    return DPOConfig(**args, beta=block["beta"], loss_type=block["loss"], label_smoothing=block["label_smoothing"],
                     max_length=block["max_length"], precompute_ref_log_probs=block["precompute_ref"])


def lora_config(block: dict[str, Any]) -> Any:
    if block["tune"] == "full":
        return None
    from sdk.backends.tuning import peft_lora

    return peft_lora(block.get("lora"))


def align_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    from trl import DPOTrainer

    from sdk.backends import training as T
    from sdk.backends import tuning
    from sdk.backends.finetune import _params
    from sdk.backends.models import quiet_library_deprecations

    quiet_library_deprecations()
    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    rows = job["rows"]
    val_rows: list[dict[str, Any]] = []
    if block["validation_split"] > 0 and len(rows) > 1:
        order = list(range(len(rows)))
        random.Random(block["seed"]).shuffle(order)
        n_val = max(1, int(len(rows) * block["validation_split"]))
        held = set(order[:n_val])
        val_rows = [r for i, r in enumerate(rows) if i in held]
        rows = [r for i, r in enumerate(rows) if i not in held]
    model, tokenizer, base_path, h = tuning.load_for_tuning(job, block["tune"])
    out = Path(job["out_dir"])
    if isinstance(rows[0]["prompt"], list) and not tokenizer.chat_template:
        raise DslError(f"{job['step_id']}: the pairs are chat messages but the tokenizer of {h.model} has no chat "
                       "template; set chat_template in the align block")
    peft_config = lora_config(block)
    config = dpo_config(block, Path(job["checkpoint_dir"]), bool(val_rows))
    drop = ["_line"]
    train = datasets.Dataset.from_list(rows).remove_columns(drop)
    evals = datasets.Dataset.from_list(val_rows).remove_columns(drop) if val_rows else None
    total = block.get("max_steps") or max(1, int(len(rows) / (block["batch_size"] * block["gradient_accumulation"])
                                                 * block["epochs"]))
    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=train, eval_dataset=evals,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[T.progress_callback(progress, f"{job['step_id']}: preference tuning "
                                                        f"({block['method']}, {block['loss']})", total)])
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    if resume:
        log(f"resuming from {Path(resume).name}")
    T.quiet(trainer)
    T.prewarm_plotting()
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    logs = [r for r in trainer.state.log_history if "loss" in r]
    last = logs[-1] if logs else {}
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               "train_pairs": len(rows), "resumed_from": Path(resume).name if resume else None}
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        if key in last:
            metrics[key.replace("/", "_")] = round(float(last[key]), 4)
    if val_rows:
        ev = trainer.evaluate()
        metrics["eval_pairs"] = len(val_rows)
        for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
            if key in ev:
                metrics[key.replace("/", "_")] = round(float(ev[key]), 4)
    metrics.update({k: v for k, v in job.get("summary", {}).items() if k != "identical_lines"})
    history = T.loss_history(trainer)
    margins = [{"step": int(r["step"]), "margin": float(r["rewards/margins"])} for r in logs if "rewards/margins" in r]
    card_dir = tuning.save_tuned(trainer, tokenizer, out, adapter=peft_config is not None, merge=block["merge"],
                            base_path=base_path, handle=h)
    T.write_loss_curve(out, history, f"{job['step_id']} preference (DPO) loss")
    (out / "margins.json").write_text(json.dumps(margins, indent=1))  # reward margin (chosen - rejected) by step
    T.write_model_card(card_dir, job["step_id"], job.get("base_name", h.model), job.get("data_hashes", {}),
                       _params(block), metrics)
    return {"metrics": metrics, "base_in_artifact": bool(h.adapter) and peft_config is not None}


class AlignBackend(TrainingBackend, Backend):
    name = "trl_dpo"
    version = "1"
    kinds = ("align",)

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

        block: Any = ctx.block
        if block.tune == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            return [Problem(path=ctx.path + ("tune",), message="tune = qlora needs bitsandbytes, which is not installed",
                            hint="pip install bitsandbytes (or 'domain-dsl[train]'), or use tune = lora")]
        return []

    def run(self, ctx: StepContext) -> StepResult:
        from sdk.backends import training as T
        from sdk.backends import tuning
        from sdk.backends.datasets import _rel
        from sdk.backends.finetune import _chat_template
        from sdk.backends.models import ModelHandle, handle
        from sdk.hashing import file_sha256

        block: Any = ctx.block
        source = ctx.spec.resolve_path(block.pairs)
        shown = _rel(source, Path.cwd())
        rows = read_pairs(source, shown, block.fields)  # a bad row fails here, before any model loads
        if not rows:
            raise DataError(shown, None, "no preference pairs")
        summary = pair_summary(rows)
        if summary["identical_pairs"]:
            ctx.log(f"warning: {summary['identical_pairs']} pairs have chosen == rejected (nothing to learn): "
                    + ", ".join(f"{shown}:{n}" for n in summary["identical_lines"]))
        if summary["chosen_longer_share"] >= 0.8 and len(rows) >= 10:
            ctx.log(f"warning: the chosen answer is the longer one in {summary['chosen_longer_share']:.0%} of the "
                    "pairs: DPO may learn that longer is better (length bias)")
        base = ctx.input(block.from_)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = _chat_template(ctx.spec, block)
        if template is None and block.from_.kind == "base_model":
            template = _chat_template(ctx.spec, ctx.spec.get(block.from_))
        job = {**tuning.job_of(ctx, "align", block, h, base, template), "rows": rows, "summary": summary,
               "data_hashes": {block.pairs: file_sha256(source)}}
        result = align_job(job, ctx.progress, ctx.log)
        m = result["metrics"]
        outputs = tuning.tuned_outputs(block.tune, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", margins="margins.json", method=block.method, tune=block.tune)
        acc = m.get("eval_rewards_accuracies", m.get("rewards_accuracies"))
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method} ({block.loss}, {block.tune}): {m['steps']} steps, loss "
                                  f"{m['train_loss']}" + (f", reward accuracy {acc}" if acc is not None else ""))
