"""The ``reward`` step: reward tuning with TRL's GRPOTrainer, the rewards taken from the project's metrics.

Prompts are ``{"prompt" or "question", "answer", optional "choices"}`` rows (a bad row is a located ``FILE:LINE``
error). For each prompt the policy samples ``num_generations`` answers; each answer is scored by every declared
reward: a metric of :data:`sdk.scoring.METRICS` against the row's answer (with choices, the answer is the option it
picks, :func:`sdk.metrics.parse_choice`), or a format rule (1 when the stripped answer fully matches the pattern);
TRL sums them with the declared weights. At plan time a prompt file that shares a question with an eval that gates
(or that evaluates this step) is refused. The outputs match ``finetune``'s and ``align``'s, so
:func:`sdk.backends.models.handle` loads them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk import metrics as M
from sdk import scoring as R
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.tuning import TrainingBackend
from sdk.errors import DataError, DslError

RAW_PROMPT = "Question: {question}\nAnswer:"  # the eval's convention for a model without a chat template


def _choice_prompt(question: str, choices: list[str]) -> str:
    """The question with its options numbered, as the eval asks an endpoint or a rag generator."""
    opts = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(choices))
    return f"{question}\nOptions:\n{opts}\nAnswer with the number of the right option."


def read_prompts(path: Path, shown: str) -> list[dict[str, Any]]:
    """Rows ``{"question", "prompt", "answer", "choices", "_line"}``; ``prompt`` is the text asked (the question,
    with numbered options when the row has choices). A bad row raises a DataError at ``shown:LINE``."""
    from sdk.jsonl import read_jsonl

    rows: list[dict[str, Any]] = []
    for line, obj in read_jsonl(path, shown):
        question = obj.get("prompt", obj.get("question"))
        if not isinstance(question, str) or not question.strip():
            raise DataError(shown, line, "missing 'prompt' or 'question' (non-empty text)",
                            "a prompt row is {\"question\": \"...\", \"answer\": \"...\", \"choices\": [...]}")
        answer = obj.get("answer")
        if isinstance(answer, int) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(shown, line, "missing 'answer' (non-empty text, or the number of the right choice)")
        choices = obj.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise DataError(shown, line, "'choices' must be a list of at least two texts")
            if answer.strip().isdigit() and 1 <= int(answer) <= len(choices):
                answer = choices[int(answer) - 1]
            elif not any(M.normalize(c) == M.normalize(answer) for c in choices):
                raise DataError(shown, line, f"answer {answer!r} is not among the choices (give its text or number)")
            answer = next(c for c in choices if M.normalize(c) == M.normalize(answer))
        q = question.strip()
        rows.append({"question": q, "prompt": _choice_prompt(q, choices) if choices else q, "answer": answer,
                     "choices": choices, "_line": line})
    return rows


def overlap(rows: list[dict[str, Any]], items: list[Any]) -> list[tuple[int, Any]]:
    """(prompt line, eval item) for every prompt whose normalised question is an eval item's."""
    by_q = {M.normalize(it.question): it for it in items}
    return [(r["_line"], by_q[M.normalize(r["question"])]) for r in rows if M.normalize(r["question"]) in by_q]


def reward_functions(rewards: dict[str, Any]) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """One TRL reward function per declared reward, and their weights. TRL calls each with the prompts, the
    completions and the dataset's other columns (``answer``, ``choices``) as lists."""
    funcs: list[Callable[..., list[float]]] = []
    weights: list[float] = []

    def text(completion: Any) -> str:  # conversational completions are a list with one assistant message
        return completion[0]["content"] if isinstance(completion, list) else str(completion)

    for name, value in rewards.items():
        if isinstance(value, dict):  # a format rule
            pattern = re.compile(value["pattern"])

            def fmt(completions: list[Any], _p: re.Pattern = pattern, **_: Any) -> list[float]:
                return [float(_p.fullmatch(text(c).strip()) is not None) for c in completions]

            fmt.__name__ = name
            funcs.append(fmt)
            weights.append(float(value.get("weight", 1.0)))
            continue
        score = R.METRICS[name].score
        assert score is not None

        def scored(completions: list[Any], answer: list[str], choices: list[Any], _s: Any = score,
                   **_: Any) -> list[float]:
            out = []
            for c, gold, opts in zip(completions, answer, choices):
                pred = text(c).strip()
                if opts:
                    idx = M.parse_choice(pred, opts)
                    pred = opts[idx] if idx is not None else pred
                view = R.Scored(prediction=pred, answers=[gold], gold=gold,
                                task="multiple_choice" if opts else "generate", cited=[], retrieved=[], expected=[],
                                k=0)
                value = _s(view)
                out.append(float(value) if value is not None else 0.0)
            return out

        scored.__name__ = name
        funcs.append(scored)
        weights.append(float(value))
    return funcs, weights


def reward_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from sdk.backends import training as T
    from sdk.backends import tuning
    from sdk.backends.align import lora_config
    from sdk.backends.finetune import _params
    from sdk.backends.models import quiet_library_deprecations

    quiet_library_deprecations()
    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    model, tokenizer, base_path, h = tuning.load_for_tuning(job, block["tune"])
    tokenizer.padding_side = "left"  # generation pads on the left
    out = Path(job["out_dir"])
    chat = bool(tokenizer.chat_template)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}] if chat else RAW_PROMPT.format(question=r["prompt"]),
             "answer": r["answer"], "choices": r["choices"] or []} for r in job["rows"]]
    funcs, weights = reward_functions(block["rewards"])
    args = T.training_args(block, Path(job["checkpoint_dir"]), has_eval=False, fine_tuning=True)
    config = GRPOConfig(**args, num_generations=block["num_generations"], beta=block["beta"],
                        max_completion_length=block["max_completion_length"], temperature=block["temperature"],
                        loss_type=block["loss"], reward_weights=weights, log_completions=False)
    total = block.get("max_steps") or max(1, int(len(rows) * block["num_generations"] * block["epochs"]
                                                 / (block["batch_size"] * block["gradient_accumulation"])))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(block),
                          callbacks=[T.progress_callback(progress, f"{job['step_id']}: reward tuning "
                                                         f"({block['method']}, {block['loss']})", total)])
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    if resume:
        log(f"resuming from {Path(resume).name}")
    T.quiet(trainer)
    T.prewarm_plotting()
    started = time.time()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    logs = [r for r in trainer.state.log_history if "reward" in r]
    # the mean reward of each logged step, and each declared reward's own mean (TRL: rewards/NAME/mean)
    curve = [{"step": int(r["step"]), "reward": round(float(r["reward"]), 4),
              **{n: round(float(r[f"rewards/{n}/mean"]), 4) for n in block["rewards"] if f"rewards/{n}/mean" in r}}
             for r in logs]
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               "train_prompts": len(rows), "resumed_from": Path(resume).name if resume else None}
    if curve:
        metrics.update(reward_first=curve[0]["reward"], reward_last=curve[-1]["reward"],
                       reward_by_step=[[c["step"], c["reward"]] for c in curve])
    peft = block["tune"] != "full"
    card_dir = tuning.save_tuned(trainer, tokenizer, out, adapter=peft, merge=block["merge"], base_path=base_path, handle=h)
    T.write_loss_curve(out, T.loss_history(trainer), f"{job['step_id']} reward tuning (GRPO) loss")
    (out / "rewards.json").write_text(json.dumps(curve, indent=1))
    T.write_model_card(card_dir, job["step_id"], job.get("base_name", h.model), job.get("data_hashes", {}),
                       _params(block), {k: v for k, v in metrics.items() if k != "reward_by_step"})
    return {"metrics": metrics, "base_in_artifact": bool(h.adapter) and peft}


class RewardBackend(TrainingBackend, Backend):
    name = "trl_grpo"
    version = "1"
    kinds = ("reward",)

    def check(self, ctx: CheckContext) -> list:
        """The prompts are readable, and share no question with an eval that gates or that evaluates this step
        (training on the gate's items would make the gate measure memory)."""
        from sdk.backends.datasets import _rel
        from sdk.evalsets import load_items
        from sdk.spec import Problem

        block: Any = ctx.block
        path = ctx.path + ("prompts",)
        if block.tune == "qlora":
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                return [Problem(path=ctx.path + ("tune",), message="tune = qlora needs bitsandbytes, which is not "
                                "installed", hint="pip install bitsandbytes, or use tune = lora")]
        source = ctx.spec.resolve_path(block.prompts)
        if not source.is_file():
            return []  # the spec's own check names a missing file
        shown = _rel(source, Path.cwd())
        try:
            rows = read_prompts(source, shown)
        except DslError as e:
            return [Problem(path=path, message=str(e))]
        me = f"{ctx.kind}.{ctx.label}"
        problems = []
        for label, ev in ctx.spec.eval.items():
            if ev.gate is None and me not in [str(s) for s in ev.systems]:
                continue
            data = ctx.spec.resolve_path(ev.data)
            try:
                items = load_items(data, ev, _rel(data, Path.cwd()))
            except (DslError, OSError):  # an unreadable eval set is that eval's own error, reported there
                continue
            hits = overlap(rows, items)
            if hits:
                line, item = hits[0]
                problems.append(Problem(
                    path=path, message=f"{len(hits)} prompt(s) share their question with eval.{label}, which "
                    f"{'gates' if ev.gate is not None else 'evaluates this step'}: {shown}:{line} is "
                    f"{_rel(data, Path.cwd())}:{item.line} ({item.question[:60]!r})",
                    hint="take the prompts from a training split, never from the items the gate measures"))
        return problems

    def run(self, ctx: StepContext) -> StepResult:
        from sdk.backends import training as T
        from sdk.backends import tuning
        from sdk.backends.datasets import _rel
        from sdk.backends.finetune import _chat_template
        from sdk.backends.models import ModelHandle, handle
        from sdk.hashing import file_sha256

        block: Any = ctx.block
        source = ctx.spec.resolve_path(block.prompts)
        shown = _rel(source, Path.cwd())
        rows = read_prompts(source, shown)  # a bad row fails here, before any model loads
        if not rows:
            raise DataError(shown, None, "no prompts")
        base = ctx.input(block.from_)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = _chat_template(ctx.spec, block)
        if template is None and block.from_.kind == "base_model":
            template = _chat_template(ctx.spec, ctx.spec.get(block.from_))
        job = {**tuning.job_of(ctx, "reward", block, h, base, template), "rows": rows,
               "data_hashes": {block.prompts: file_sha256(source)}}
        result = reward_job(job, ctx.progress, ctx.log)
        m = result["metrics"]
        outputs = tuning.tuned_outputs(block.tune, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", rewards="rewards.json", method=block.method,
                       tune=block.tune)
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method} ({block.loss}, {block.tune}): {m['steps']} steps, mean reward "
                                  f"{m.get('reward_first')} -> {m.get('reward_last')}")
