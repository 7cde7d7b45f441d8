"""The ``reward`` step: reward tuning with TRL's GRPOTrainer, the rewards taken from the project's metrics.

Prompts are ``{"prompt" or "question", "answer", optional "choices"}`` rows (a bad row is a located ``FILE:LINE``
error). A row may also carry ``context`` (passages, each text or ``{"source", "text"}``) and ``sources`` (the gold
sources among them): it is then asked through the rag prompt (the rag default, or the block's ``prompt``) with the
passages numbered, and the citation rewards score the ``[n]`` it cites against its gold sources, as the eval does.
For each prompt the policy samples ``num_generations`` answers; each answer is scored by every declared reward: a
metric of :data:`sdk.scoring.METRICS` against the row's answer (with choices, the answer is the option it picks,
:func:`sdk.metrics.parse_choice`; ``judge``: the block's judge endpoint grades it, as the eval's judge does), or a
format rule (1 when the stripped answer fully matches the pattern);
TRL sums them with the declared weights. At plan time a prompt file that shares a question with an eval that gates
(or that evaluates this step) is refused. The outputs match ``finetune``'s and ``align``'s, so
:func:`sdk.backends.models.handle` loads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk import metrics as M
from sdk import scoring as R
from sdk.backends import charts
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.data.rows import read_rows, rel
from sdk.backends.eval.clients import DEFAULT_RUBRIC, Judge
from sdk.backends.models import ModelHandle, handle, quiet_library_deprecations
from sdk.backends.rag.system import DEFAULT_PROMPT, RagSystem, citations, prompt_text
from sdk.backends.training import common as T
from sdk.backends.training import tuning
from sdk.backends.training.reward_data import (
    dataset_prompts,
    needs_context,
    overlap,
    prompt_for,
    read_prompts,
    source_key,
)
from sdk.backends.training.tuning import TrainingBackend
from sdk.errors import DataError, DslError
from sdk.evalsets import load_items
from sdk.grades import judge_standing
from sdk.hashing import file_sha256
from sdk.jsonl import read_jsonl
from sdk.spec import Problem
from sdk.spec.objects import Endpoint
from sdk.spec.values import FileRef


def reward_functions(rewards: dict[str, Any], judge: Any = None) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """One TRL reward function per declared reward, and their weights. TRL calls each with the prompts, the
    completions and the dataset's other columns (``question``, ``answer``, ``choices``...) as lists. ``judge``
    (an :class:`sdk.backends.eval.clients.Judge`) grades the answers of the ``judge`` reward, the eval's way."""
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

        def scored(completions: list[Any], answer: list[str], choices: list[Any],
                   context_sources: list[Any] | None = None, gold_sources: list[Any] | None = None,
                   question: list[str] | None = None, _s: Any = score, _name: str = name, **_: Any) -> list[float]:
            out = []
            none = [None] * len(completions)
            judged = _judged(judge, question or [""] * len(completions), answer, [text(c).strip() for c in completions]) \
                if _name == "judge" else none
            for c, gold, opts, ctx, expected, grade in zip(completions, answer, choices, context_sources or none,
                                                           gold_sources or none, judged):
                pred = raw = text(c).strip()
                if opts:
                    idx = M.parse_choice(pred, opts)
                    pred = opts[idx] if idx is not None else pred
                cited = [ctx[n - 1] for n in citations(raw, len(ctx))] if ctx else []
                view = R.Scored(prediction=pred, answers=[gold], gold=gold,
                                task="multiple_choice" if opts else "generate", cited=cited, retrieved=list(ctx or []),
                                expected=list(expected or []), k=len(ctx or []), judged=grade)
                value = _s(view)
                out.append(float(value) if value is not None else 0.0)
            return out

        scored.__name__ = name
        funcs.append(scored)
        weights.append(float(value))
    return funcs, weights


def _judged(judge: Any, questions: list[str], answers: list[str], predictions: list[str]) -> list[float | None]:
    """The judge's grades of a batch of answers, asked concurrently (a few requests at a time)."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    items = [SimpleNamespace(question=q, answers=[a], gold=a) for q, a in zip(questions, answers)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(judge.score, items, predictions))


def reward_job(job: dict[str, Any], progress: Any, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    quiet_library_deprecations()
    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    model, tokenizer, base_path, h = tuning.load_for_tuning(job, block["tune"])
    tokenizer.padding_side = "left"  # generation pads on the left
    out = Path(job["out_dir"])
    chat = bool(tokenizer.chat_template)
    template = job.get("rag_prompt") or DEFAULT_PROMPT

    rows = [{"prompt": prompt_for(r, template, chat), "question": r["question"], "answer": r["answer"],
             "choices": r["choices"] or [], "context_sources": [source_key(p["source"]) for p in r["context"]],
             "gold_sources": r["sources"]} for r in job["rows"]]
    tuning.check_chat_rows(tokenizer, [{**r, "_line": s.get("_line")} for r, s in zip(rows, job["rows"])],
                           job["step_id"], job.get("source"))
    judge = None
    if job.get("judge"):
        judge = Judge(Endpoint.model_validate(job["judge"]["endpoint"]), job["judge"]["rubric"])
    funcs, weights = reward_functions(block["rewards"], judge)
    args = T.training_args(block, Path(job["checkpoint_dir"]), has_eval=False, fine_tuning=True,
                           distributed=T.distributed_args())
    config = GRPOConfig(**args, num_generations=block["num_generations"], beta=block["beta"],
                        max_completion_length=block["max_completion_length"], temperature=block["temperature"],
                        loss_type=block["loss"], reward_weights=weights, log_completions=False)
    total = block.get("max_steps") or max(1, int(len(rows) * block["num_generations"] * block["epochs"]
                                                 / (block["batch_size"] * block["gradient_accumulation"])))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=tuning.lora_config(block),
                          callbacks=[T.progress_callback(progress, f"{job['step_id']}: reward tuning "
                                                         f"({block['method']}, {block['loss']})", total)])
    resume = T.latest_checkpoint(Path(job["checkpoint_dir"]))
    output, seconds = T.train(trainer, resume, log)
    logs = [r for r in trainer.state.log_history if "reward" in r]
    # the mean reward of each logged step, and each declared reward's own mean (TRL: rewards/NAME/mean)
    curve = [{"step": int(r["step"]), "reward": round(float(r["reward"]), 4),
              **{n: round(float(r[f"rewards/{n}/mean"]), 4) for n in block["rewards"] if f"rewards/{n}/mean" in r}}
             for r in logs]
    metrics: dict[str, Any] = {"train_loss": round(float(output.training_loss), 4),
                               "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 2),
                               "train_prompts": len(rows), "resumed_from": Path(resume).name if resume else None,
                               "processes": T.world_size()}
    if curve:
        metrics.update(reward_first=curve[0]["reward"], reward_last=curve[-1]["reward"],
                       reward_by_step=[[c["step"], c["reward"]] for c in curve])
    peft = block["tune"] != "full"
    card_dir = tuning.save_tuned(trainer, tokenizer, out, adapter=peft, merge=block["merge"], base_path=base_path,
                                 handle=h)
    if T.is_main_process():
        charts.write_loss_curve(out, T.loss_history(trainer), f"{job['step_id']} reward tuning (GRPO) loss")
        (out / "rewards.json").write_text(json.dumps(curve, indent=1))
        charts.write_curve(out, "rewards", curve, f"{job['step_id']} reward tuning ({block['method'].upper()}): mean "
                      "reward", "mean reward")
        T.write_model_card(card_dir, job["step_id"], job.get("base_name", h.model), job.get("data_hashes", {}),
                           tuning.params(block), {k: v for k, v in metrics.items() if k != "reward_by_step"})
    return {"metrics": metrics, "base_in_artifact": bool(h.adapter) and peft}


def retrieve(ctx: StepContext, block: Any, rows: list[dict[str, Any]]) -> None:
    """Each row's passages retrieved by the rag step ``block.retrieval`` for its question, and the prompt that rag
    system would give its generator (its retriever, top_k and prompt): what the model will see when it serves
    behind it. The citation rewards score the answers against these passages."""
    rag = RagSystem.open(ctx.input(block.retrieval), with_generator=False, base_dir=ctx.spec.base_dir)
    with ctx.progress.task(f"{ctx.step_id}: retrieving for {len(rows)} prompts", total=len(rows)) as bar:
        for r in rows:
            docs = rag.retrieve(r["question"])
            r["context"] = [{"source": str(d["meta"].get("source") or d["id"]), "content": d["content"]} for d in docs]
            r["asked"] = rag.render_prompt(r["prompt"], docs)
            bar.advance()


class RewardBackend(TrainingBackend, Backend):
    name = "trl_grpo"
    version = "1"
    kinds = ("reward",)

    def check(self, ctx: CheckContext) -> list:
        """The prompts are readable, and share no question with an eval that gates or that evaluates this step
        (training on the gate's items would make the gate measure memory)."""
        block: Any = ctx.block
        path = ctx.path + ("prompts",)
        if block.tune == "qlora":
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                return [Problem(path=ctx.path + ("tune",), message="tune = qlora needs bitsandbytes, which is not "
                                "installed", hint="pip install bitsandbytes, or use tune = lora")]
        if block.data is not None:
            path = ctx.path + ("data",)
            data_block = ctx.spec.get(block.data)
            if data_block.format == "text":
                return []  # the kind's plan check says so
            source = ctx.spec.resolve_path(data_block.path)
        else:
            source = ctx.spec.resolve_path(block.prompts)
        if not source.is_file():
            return []  # the spec's own check names a missing file
        shown = rel(source, Path.cwd())
        try:
            rows = self._rows(block, ctx.spec, source, shown)
            needs_context(rows, block.rewards, shown, retrieved=block.retrieval is not None)
        except DslError as e:
            return [Problem(path=path, message=str(e))]
        me = f"{ctx.kind}.{ctx.label}"
        problems = []
        for label, ev in ctx.spec.eval.items():
            if (ev.gate is None and me not in [str(s) for s in ev.systems]) or not isinstance(ev.data, str):
                continue  # an eval over a synth step's accepted items: those exist only once it has run
            data = ctx.spec.resolve_path(ev.data)
            try:
                items = load_items(data, ev, rel(data, Path.cwd()))
            except (DslError, OSError):  # an unreadable eval set is that eval's own error, reported there
                continue
            hits = overlap(rows, items)
            if hits:
                line, item = hits[0]
                problems.append(Problem(
                    path=path, message=f"{len(hits)} prompt(s) share their question with eval.{label}, which "
                    f"{'gates' if ev.gate is not None else 'evaluates this step'}: {shown}:{line} is "
                    f"{rel(data, Path.cwd())}:{item.line} ({item.question[:60]!r})",
                    hint="take the prompts from a training split, never from the items the gate measures"))
        return problems

    @staticmethod
    def _rows(block: Any, spec: Any, source: Path, shown: str) -> list[dict[str, Any]]:
        """The prompt rows as written: the prompts file's, or all the rows of the dataset named by ``data`` (at plan
        time, before the dataset step has split them)."""
        if block.data is None:
            return read_prompts(source, shown)

        return dataset_prompts(read_rows(source, spec.get(block.data), shown))

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        if block.data is not None:  # the dataset step's training rows (never its validation split)
            data = ctx.input(block.data)
            shown = rel(Path(data.outputs.get("source") or data.path), Path.cwd())
            rows = dataset_prompts([obj for _, obj in read_jsonl(data.path / data.outputs["train"], shown)])
            hashes = data.manifest.get("files", {})
        else:
            source = ctx.spec.resolve_path(block.prompts)
            shown = rel(source, Path.cwd())
            rows = read_prompts(source, shown)  # a bad row fails here, before any model loads
            hashes = {block.prompts: file_sha256(source)}
        if not rows:
            raise DataError(shown, None, "no prompts")
        needs_context(rows, block.rewards, shown, retrieved=block.retrieval is not None)
        if block.retrieval is not None:
            retrieve(ctx, block, rows)
        base = ctx.input(block.from_)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = tuning.chat_template(ctx, block, base)
        if block.judge is not None:  # a judge is trusted only as far as it agrees with the experts
            trusted, why = judge_standing(ctx.spec.base_dir, ctx.spec, block.judge, ctx.workdir)
            if not trusted:
                raise DslError(f"{ctx.step_id}: the judge reward is refused: {why}")
            ctx.log(f"{ctx.step_id}: {why}")
        rubric = block.rubric.read(ctx.spec.base_dir) if isinstance(block.rubric, FileRef) else block.rubric
        judge = None if block.judge is None else \
            {"endpoint": block.judge.model_dump(mode="json", by_alias=True), "rubric": rubric or DEFAULT_RUBRIC}
        job = {**tuning.job_of(ctx, "reward", block, h, base, template), "rows": rows,
               "rag_prompt": prompt_text(ctx.spec, block), "judge": judge, "data_hashes": hashes, "source": shown}
        result = T.run_step_job(ctx, job, reward_job, __name__)
        m = result["metrics"]
        if block.retrieval is not None:  # how many passages the rag step gave the prompts, on average
            m["passages_per_prompt"] = round(sum(len(r["context"]) for r in rows) / len(rows), 2)
        outputs = tuning.tuned_outputs(block.tune, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", rewards="rewards.json", method=block.method,
                       tune=block.tune)
        if (ctx.out_dir / "rewards.png").is_file():
            outputs["rewards_plot"] = "rewards.png"
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method} ({block.loss}, {block.tune}): {m['steps']} steps, mean reward "
                                  f"{m.get('reward_first')} -> {m.get('reward_last')}")


if __name__ == "__main__":  # one rank of a launched run: python -m sdk.backends.training.reward JOB.json
    from sdk.backends.training.common import main

    main(reward_job)
