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
        context, sources = _context(obj, shown, line)
        rows.append({"question": q, "prompt": _choice_prompt(q, choices) if choices else q, "answer": answer,
                     "choices": choices, "context": context, "sources": sources, "_line": line})
    return rows


def _context(obj: dict[str, Any], shown: str, line: int) -> tuple[list[dict[str, str]], list[str]]:
    """A row's passages ``[{"source", "content"}]`` (a plain text passage is named by its number) and gold sources."""
    raw, gold = obj.get("context"), obj.get("sources")
    if raw is None:
        if gold is not None:
            raise DataError(shown, line, "'sources' without 'context': there is nothing to cite",
                            "give the passages as \"context\": [{\"source\": \"sip.md\", \"text\": \"...\"}]")
        return [], []
    if not isinstance(raw, list) or not raw:
        raise DataError(shown, line, "'context' must be a non-empty list of passages")
    passages = []
    for i, p in enumerate(raw):
        if isinstance(p, str) and p.strip():
            passages.append({"source": str(i + 1), "content": p})
        elif isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"].strip() \
                and isinstance(p.get("source", ""), str):
            passages.append({"source": p.get("source") or str(i + 1), "content": p["text"]})
        else:
            raise DataError(shown, line, f"context[{i}] must be text or {{\"source\": \"...\", \"text\": \"...\"}}")
    if gold is not None and (not isinstance(gold, list) or not all(isinstance(g, str) for g in gold)):
        raise DataError(shown, line, "'sources' must be a list of source names (those of its context passages)")
    known = {_source_key(p["source"]) for p in passages}
    missing = [g for g in gold or [] if _source_key(g) not in known]
    if missing:
        raise DataError(shown, line, f"source {missing[0]!r} is not one of the row's context passages")
    return passages, [_source_key(g) for g in gold or []]


CITATION_REWARDS = ("citation_precision", "citation_recall")


def needs_context(rows: list[dict[str, Any]], rewards: dict[str, Any], shown: str) -> None:
    """A citation reward scores what a row's answer cites among its passages: every row needs its context."""
    wanted = [n for n in rewards if n in CITATION_REWARDS]
    bare = next((r["_line"] for r in rows if not r["context"] or (not r["sources"] and "citation_recall" in wanted)),
                None) if wanted else None
    if bare is not None:
        raise DataError(shown, bare, f"reward {wanted[0]} needs 'context' passages and the gold 'sources' among them "
                                     "on every row", "{\"question\": ..., \"answer\": ..., \"context\": [{\"source\": "
                                     "\"sip.md\", \"text\": \"...\"}], \"sources\": [\"sip.md\"]}")


def _source_key(source: str) -> str:
    """Sources compare by file stem, as the eval compares them (``docs/sip.md`` is ``sip``)."""
    return Path(source).stem if source else source


def asked(row: dict[str, Any], template: str) -> str:
    """The text a row asks: its prompt, or with context, the rag prompt over its numbered passages."""
    if not row["context"]:
        return row["prompt"]
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    docs = [{"id": p["source"], "content": p["content"], "meta": {"source": p["source"]}} for p in row["context"]]
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    return env.from_string(template).render(documents=docs, question=row["prompt"]).strip()


def overlap(rows: list[dict[str, Any]], items: list[Any]) -> list[tuple[int, Any]]:
    """(prompt line, eval item) for every prompt whose normalised question is an eval item's."""
    by_q = {M.normalize(it.question): it for it in items}
    return [(r["_line"], by_q[M.normalize(r["question"])]) for r in rows if M.normalize(r["question"]) in by_q]


def reward_functions(rewards: dict[str, Any], judge: Any = None) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """One TRL reward function per declared reward, and their weights. TRL calls each with the prompts, the
    completions and the dataset's other columns (``question``, ``answer``, ``choices``...) as lists. ``judge``
    (an :class:`sdk.backends.eval_models.Judge`) grades the answers of the ``judge`` reward, the eval's way."""
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
            from sdk.backends.rag_system import citations

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

    from sdk.backends import training as T
    from sdk.backends import tuning
    from sdk.backends.align import lora_config
    from sdk.backends.finetune import _params
    from sdk.backends.models import quiet_library_deprecations
    from sdk.backends.rag_system import DEFAULT_PROMPT

    quiet_library_deprecations()
    T.set_threads()
    block = job["block"]
    T.seed_everything(block["seed"])
    model, tokenizer, base_path, h = tuning.load_for_tuning(job, block["tune"])
    tokenizer.padding_side = "left"  # generation pads on the left
    out = Path(job["out_dir"])
    chat = bool(tokenizer.chat_template)
    template = job.get("rag_prompt") or DEFAULT_PROMPT

    def prompt_of(r: dict[str, Any]) -> Any:
        text = asked(r, template)
        if chat:
            return [{"role": "user", "content": text}]
        return text if r["context"] else RAW_PROMPT.format(question=text)

    rows = [{"prompt": prompt_of(r), "question": r["question"], "answer": r["answer"], "choices": r["choices"] or [],
             "context_sources": [_source_key(p["source"]) for p in r["context"]], "gold_sources": r["sources"]}
            for r in job["rows"]]
    funcs, weights = reward_functions(block["rewards"], job.get("judge"))
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
            needs_context(rows, block.rewards, shown)
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
        needs_context(rows, block.rewards, shown)
        base = ctx.input(block.from_)
        h = handle(base)
        if h.adapter and base.outputs.get("merged"):
            h = ModelHandle(model=str((base.path / base.outputs["merged"]).resolve()), tokenizer=h.tokenizer)
        T.check_model_exists(h.model, ctx.step_id, block.from_)
        template = _chat_template(ctx.spec, block)
        if template is None and block.from_.kind == "base_model":
            template = _chat_template(ctx.spec, ctx.spec.get(block.from_))
        from sdk.backends.eval_models import DEFAULT_RUBRIC, Judge
        from sdk.backends.rag_system import prompt_text
        from sdk.spec.values import FileRef

        rubric = block.rubric.read(ctx.spec.base_dir) if isinstance(block.rubric, FileRef) else block.rubric
        job = {**tuning.job_of(ctx, "reward", block, h, base, template), "rows": rows,
               "rag_prompt": prompt_text(ctx.spec, block),
               "judge": Judge(block.judge, rubric or DEFAULT_RUBRIC) if block.judge is not None else None,
               "data_hashes": {block.prompts: file_sha256(source)}}
        result = reward_job(job, ctx.progress, ctx.log)
        m = result["metrics"]
        outputs = tuning.tuned_outputs(block.tune, block.merge, h, bool(result.get("base_in_artifact")))
        outputs.update(loss_curve="loss.json", loss_plot="loss.png", rewards="rewards.json", method=block.method,
                       tune=block.tune)
        return StepResult(metrics=m, outputs=outputs,
                          summary=f"{block.method} ({block.loss}, {block.tune}): {m['steps']} steps, mean reward "
                                  f"{m.get('reward_first')} -> {m.get('reward_last')}")
