"""The ``align`` step: preference tuning with TRL, by ``method``: ``dpo`` (DPOTrainer, with its loss variants: IPO,
hinge, robust...), ``simpo`` (TRL's experimental CPOTrainer with the SimPO loss: pairs, no reference model, a
length-normalised reward and a target margin ``gamma``), ``orpo`` (TRL's experimental ORPOTrainer: pairs, no
reference model) or ``kto`` (KTOTrainer: answers labelled desirable or not).

The data is read by :mod:`sdk.backends.data.preferences` (pairs, or unpaired rows for kto; a bad row is a located
``FILE:LINE`` error, raised before any model loads). With ``tune = lora`` or ``qlora`` the reference model of dpo
and kto is the policy with its adapter disabled (TRL's way: no second copy); with ``tune = full`` TRL keeps a
frozen copy, or ``precompute_ref`` computes the reference log-probs once. The outputs match ``finetune``'s, so
:func:`sdk.backends.models.handle` loads them.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk.backends import charts
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.data.preferences import kto_weights_hint, label_problem, read_preferences, summary_of
from sdk.backends.data.rows import rel
from sdk.backends.models import ModelHandle, handle, quiet_library_deprecations
from sdk.backends.training import common as T
from sdk.backends.training import tuning
from sdk.backends.training.tuning import TrainingBackend
from sdk.errors import DataError, DslError
from sdk.hashing import file_sha256
from sdk.spec import Problem

NAMES = {"dpo": "DPO", "simpo": "SimPO", "orpo": "ORPO", "kto": "KTO"}
# What each trainer logs besides the loss (TRL 1.x), kept as the last logged value in the metrics.
LOGGED = {"dpo": ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"),
          "orpo": ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "nll_loss",
                   "log_odds_ratio"),
          "kto": ("rewards/margins", "rewards/chosen", "rewards/rejected", "kl"),
          "simpo": ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")}


def make_trainer(block: dict[str, Any], checkpoint_dir: Path, model: Any, tokenizer: Any, train: Any, evals: Any,
                 peft_config: Any, callbacks: list[Any]) -> Any:
    """The TRL trainer of the block's method, with the block's settings."""
    args = T.training_args(block, checkpoint_dir, has_eval=evals is not None, fine_tuning=True,
                           distributed=T.distributed_args())
    common = {"model": model, "train_dataset": train, "eval_dataset": evals, "processing_class": tokenizer,
              "peft_config": peft_config, "callbacks": callbacks}
    if block["method"] == "kto":
        from trl import KTOConfig, KTOTrainer

        config = KTOConfig(**args, beta=block["beta"], max_length=block["max_length"],
                           desirable_weight=block.get("desirable_weight") or 1.0,
                           undesirable_weight=block.get("undesirable_weight") or 1.0,
                           precompute_ref_log_probs=block["precompute_ref"])
        return KTOTrainer(ref_model=None, args=config, **common)
    if block["method"] in ("orpo", "simpo"):
        import warnings

        from trl.import_utils import TRLExperimentalWarning

        with warnings.catch_warnings():  # ORPO and CPO (SimPO) live in trl.experimental, which warns on import
            warnings.simplefilter("ignore", TRLExperimentalWarning)
            from trl.experimental.cpo import CPOConfig, CPOTrainer
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        if block["method"] == "simpo":  # SimPO is TRL's CPO trainer with the simpo loss and no NLL term
            config = CPOConfig(**args, beta=block["beta"], loss_type="simpo", cpo_alpha=0.0,
                               simpo_gamma=block["gamma"], label_smoothing=block["label_smoothing"],
                               max_length=block["max_length"], remove_unused_columns=False)
            return CPOTrainer(args=config, **common)
        config = ORPOConfig(**args, beta=block["beta"], max_length=block["max_length"],
                            remove_unused_columns=False)  # its pair collator needs every column (else it warns)
        return ORPOTrainer(args=config, **common)
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**args, beta=block["beta"], loss_type=block["loss"], label_smoothing=block["label_smoothing"],
                       max_length=block["max_length"], precompute_ref_log_probs=block["precompute_ref"])
    return DPOTrainer(ref_model=None, args=config, **common)


def _split(rows: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out): a seeded random share of the rows held out for eval."""
    if share <= 0 or len(rows) <= 1:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, int(len(rows) * share))])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _rewards(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reward figures by logged step: margin (chosen - rejected), chosen and rejected rewards; None where the
    trainer did not log one (KTO logs a margin only when a logging window saw both labels)."""
    keys = {"margin": "rewards/margins", "chosen": "rewards/chosen", "rejected": "rewards/rejected"}
    return [{"step": int(r["step"]), **{k: float(r[v]) if v in r else None for k, v in keys.items()}}
            for r in logs if any(v in r for v in keys.values())]


def align_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets

    quiet_library_deprecations()
    T.set_threads()
    block = job["block"]
    method = block["method"]
    T.seed_everything(block["seed"])
    rows, val_rows = _split(job["rows"], block["validation_split"], block["seed"])
    if method == "kto":  # KTO samples in order (its KL term pairs neighbours): mix the labels once, seeded
        rows = list(rows)
        random.Random(block["seed"]).shuffle(rows)
    model, tokenizer, base_path, h = tuning.load_for_tuning(job, block["tune"])
    out = Path(job["out_dir"])
    if isinstance(rows[0]["prompt"], list) and not tokenizer.chat_template:
        raise DslError(f"{job['step_id']}: the preference data is chat messages but the tokenizer of {h.model} has no "
                       "chat template; set chat_template in the align block")
    tuning.check_chat_rows(tokenizer, [*rows, *val_rows], job["step_id"], job.get("source"))
    peft_config = tuning.lora_config(block)
    train = datasets.Dataset.from_list(rows).remove_columns(["_line"])
    evals = datasets.Dataset.from_list(val_rows).remove_columns(["_line"]) if val_rows else None
    total = block.get("max_steps") or max(1, int(len(rows) / (block["batch_size"] * block["gradient_accumulation"])
                                                 * block["epochs"]))
    variant = f", {block['loss']}" if method == "dpo" else ""
    callback = T.progress_callback(progress, f"{job['step_id']}: preference tuning ({method}{variant})", total)
    trainer = make_trainer(block, Path(job["checkpoint_dir"]), model, tokenizer, train, evals, peft_config,
                           [callback])
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    output, seconds = T.train(trainer, resume, log)
    logs = [r for r in trainer.state.log_history if "loss" in r]
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               ("train_examples" if method == "kto" else "train_pairs"): len(rows),
                               "resumed_from": Path(resume).name if resume else None, "processes": T.world_size()}
    for key in LOGGED[method]:  # the last value each was logged with (KTO skips a key a window did not see)
        seen = [r[key] for r in logs if key in r]
        if seen:
            metrics[key.replace("/", "_")] = round(float(seen[-1]), 4)
    if val_rows:
        ev = trainer.evaluate()
        metrics["eval_examples" if method == "kto" else "eval_pairs"] = len(val_rows)
        for key in ("eval_loss",) + tuple(f"eval_{k}" for k in LOGGED[method] if k.startswith("rewards/")):
            if key in ev:
                metrics[key.replace("/", "_")] = round(float(ev[key]), 4)
    metrics.update({k: v for k, v in job.get("summary", {}).items() if not isinstance(v, list)})
    history = T.loss_history(trainer)
    card_dir = tuning.save_tuned(trainer, tokenizer, out, adapter=peft_config is not None, merge=block["merge"],
                                 base_path=base_path, handle=h)
    if T.is_main_process():
        charts.write_loss_curve(out, history, f"{job['step_id']} preference ({NAMES[method]}) loss")
        margins = _rewards(logs)  # reward margin (chosen - rejected) and the chosen and rejected rewards, by step
        (out / "margins.json").write_text(json.dumps(margins, indent=1))
        charts.write_curve(out, "margins", margins, f"{job['step_id']} preference ({NAMES[method]}) rewards",
                      "implicit reward")
        T.write_model_card(card_dir, job["step_id"], job.get("base_name", h.model), job.get("data_hashes", {}),
                           tuning.params(block), metrics)
    return {"metrics": metrics, "base_in_artifact": bool(h.adapter) and peft_config is not None}


class AlignBackend(TrainingBackend, Backend):
    name = "trl_dpo"
    version = "1"
    kinds = ("align",)

    def check(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        if block.tune == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            return [Problem(path=ctx.path + ("tune",), message="tune = qlora needs bitsandbytes, which is not installed",
                            hint="pip install bitsandbytes (or 'domain-dsl[train]'), or use tune = lora")]
        return []

    def _read(self, ctx: StepContext, source: Path, shown: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The rows and their summary; the warnings and refusals a person should see before any model loads."""
        block: Any = ctx.block
        rows = read_preferences(source, shown, block.method, block.fields)  # a bad row fails here
        if not rows:
            raise DataError(shown, None, "no preference examples" if block.method == "kto" else "no preference pairs")
        summary = summary_of(rows, block.method)
        if block.method == "kto":
            problem = label_problem(summary)
            if problem:
                raise DataError(shown, None, problem, "add answers with the other label, or use dpo/orpo on pairs")
            if summary["conflicting_labels"]:
                ctx.log(f"warning: {summary['conflicting_labels']} examples repeat a prompt and answer with the other "
                        "label: " + ", ".join(f"{shown}:{a} (vs line {b})" for a, b in summary["conflicting_lines"]))
            hint = kto_weights_hint(summary, block.desirable_weight or 1.0, block.undesirable_weight or 1.0)
            if hint:
                ctx.log(f"warning: {hint}")
            return rows, summary
        if summary["identical_pairs"]:
            ctx.log(f"warning: {summary['identical_pairs']} pairs have chosen == rejected (nothing to learn): "
                    + ", ".join(f"{shown}:{n}" for n in summary["identical_lines"]))
        if summary["chosen_longer_share"] >= 0.8 and len(rows) >= 10:
            ctx.log(f"warning: the chosen answer is the longer one in {summary['chosen_longer_share']:.0%} of the "
                    f"pairs: {NAMES[block.method]} may learn that longer is better (length bias)")
        return rows, summary

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        if isinstance(block.pairs, str):
            source = ctx.spec.resolve_path(block.pairs)
        else:  # synth.X of task preference: its rows.jsonl
            art = ctx.input(block.pairs)
            source = art.path / art.outputs["rows"]
        shown = rel(source, Path.cwd())
        rows, summary = self._read(ctx, source, shown)
        base = ctx.input(block.from_)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = tuning.chat_template(ctx, block, base)
        job = {**tuning.job_of(ctx, "align", block, h, base, template), "rows": rows, "summary": summary,
               "data_hashes": {str(block.pairs): file_sha256(source)}, "source": shown}
        result = T.run_step_job(ctx, job, align_job, __name__)
        m = result["metrics"]
        outputs = tuning.tuned_outputs(block.tune, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", margins="margins.json", method=block.method,
                       tune=block.tune)
        if (ctx.out_dir / "margins.png").is_file():
            outputs["margins_plot"] = "margins.png"
        acc = m.get("eval_rewards_accuracies", m.get("rewards_accuracies"))
        margin = m.get("eval_rewards_margins", m.get("rewards_margins"))
        how = f"{block.loss}, {block.tune}" if block.method == "dpo" else block.tune
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method} ({how}): {m['steps']} steps, loss {m['train_loss']}"
                                  + (f", reward accuracy {acc}" if acc is not None else "")
                                  + (f", reward margin {margin}" if acc is None and margin is not None else ""))


if __name__ == "__main__":  # one rank of a launched run: python -m sdk.backends.training.align JOB.json
    from sdk.backends.training.common import main

    main(align_job)
