"""``reward LABEL { from = MODEL  prompts = "mc.jsonl"  rewards = { accuracy = 1.0 }  num_generations = 4 }``:
reward tuning with TRL's GRPOTrainer, the rewards declared from the project's eval metrics (sdk.metrics) and
regular-expression format rules, each with a weight. LoRA/QLoRA over the ``from`` model, or all the weights."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.blocks.pretrain import with_compute
from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Endpoint, Lora, TrainCommon
from sdk.spec.paths import named_files, path_problem
from sdk.spec.templates import chat_template_problems
from sdk.spec.values import Block, PositiveInt, Problem, TextOrFile, ref_of

# Per-item metrics of sdk.scoring a reward can use: against the row's answer, (citations) against the gold
# sources among the row's own context passages, or (judge) an LLM judge's grade through the block's judge endpoint.
REWARD_METRICS = ("exact_match", "accuracy", "f1", "citation_precision", "citation_recall", "judge")
# TRL's GRPOConfig.loss_type values that need no extra settings (TRL 1.x).
GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")


# A reward's weight in the sum, a metric's (exact_match = 1.0) or a format rule's: the same bounds for both.
Weight = Annotated[float, Field(ge=-100, le=100)]


class FormatRule(Block):
    """A format reward: 1 when the whole answer matches the regular expression, else 0."""

    pattern: str = Field(description="Python regular expression the stripped answer must match (re.fullmatch)")
    weight: Weight = Field(default=1.0, description="Weight of this reward in the sum")

    @model_validator(mode="after")
    def _compiles(self) -> FormatRule:
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise PydanticCustomError("bad_pattern", "pattern is not a regular expression: {e}", {"e": str(e)})
        return self


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    problem = path_problem(spec, block.prompts) if check_files and block.prompts is not None else None
    return [Problem(path=("reward", label, "prompts"), message=problem)] if problem else []


def _plan_check(spec: Any, label: str, block: Any) -> list[Problem]:
    """Prompts from a dataset are its conversations' user turns: a text dataset has none."""
    if block.data is not None and spec.has(block.data) and spec.get(block.data).format == "text":
        return [Problem(path=("reward", label, "data"), message=f"{block.data} is format text: it has no question "
                        "and answer turns to prompt with", hint="use a chat or instruction dataset, or prompts = "
                        "\"FILE.jsonl\"")]
    return chat_template_problems(spec, label, block, "reward")


@declare("reward", role="model", serving="model", opener="sdk.backends.eval.clients:open_model",
         backend=("trl_grpo", "sdk.backends.training.reward:RewardBackend",
                                           "pip install 'domain-dsl[train]'"),
         outputs=("tokenizer",), check=_check, plan_check=_plan_check, facets=content_facets,
         reads=lambda spec, block: named_files(spec, block, ("prompts",)),
         extra={"config": with_compute})
class RewardBlock(TrainCommon):
    """Reward tuning (GRPO) with TRL: sampled answers to prompts, scored by the recipe's metrics and format rules."""

    from_: ref_of("@model") = Field(alias="from", description="Model to tune, usually a finetune")  # type: ignore[valid-type]
    prompts: str | None = Field(default=None, description="JSONL of {prompt or question, answer, optional choices, "
                                                          "optional context and sources} rows, relative to the "
                                                          "recipe; must share no question with an eval that gates")
    data: ref_of("dataset") | None = Field(  # type: ignore[valid-type]
        default=None, description="Or a chat/instruction dataset: its training rows' last user turn is the prompt "
                                  "(with the turns before it), the assistant's answer the reference")
    rewards: dict[str, Weight | FormatRule] = Field(
        min_length=1, description="Weighted rewards: metric = weight (exact_match, accuracy, f1: against the row's "
                                  "answer; citation_precision, citation_recall: the [n] cited against the row's "
                                  "gold sources; judge: the judge endpoint's grade), or a format rule "
                                  "NAME = { pattern = \"^...$\"  weight = 0.2 }")
    method: Literal["grpo"] = Field(default="grpo", description="Reward-tuning method (grpo)")
    loss: Literal[GRPO_LOSSES] = Field(default="dapo",  # type: ignore[valid-type]
                                       description="GRPO loss aggregation: dapo, grpo, dr_grpo, bnpo, ... "
                                                   "(TRL's loss_type)")
    num_generations: PositiveInt = Field(default=4, ge=2, description="Answers sampled per prompt (the group)")
    max_completion_length: PositiveInt = Field(default=32, description="Longest sampled answer, in tokens")
    temperature: float = Field(default=1.0, gt=0, le=10, description="Sampling temperature of the answers")
    beta: float = Field(default=0.0, ge=0, le=100, description="KL pull towards the reference model (0: none, "
                                                               "TRL's default)")
    tune: Literal["full", "lora", "qlora"] = Field(default="lora", description="Which weights train: full, lora or "
                                                                               "qlora (as finetune's method)")
    lora: Lora | None = Field(default=None, description="LoRA settings (lora and qlora)")
    learning_rate: float = Field(default=1e-5, gt=0, le=1.0, description="Peak learning rate")
    batch_size: PositiveInt = Field(default=4, description="Per-device batch size (answers, a multiple of "
                                                          "num_generations)")
    chat_template: TextOrFile | None = Field(default=None, description="Chat template (default: the model's)")
    prompt: TextOrFile | None = Field(default=None, description="Jinja2 prompt with documents and question for rows "
                                                                "with context (default: the rag step's default)")
    retrieval: ref_of("rag") | None = Field(  # type: ignore[valid-type]
        default=None, description="Rag step that retrieves each prompt's passages and asks it through its own "
                                  "prompt, as it will ask the model when serving; citation rewards score against them")
    judge: Endpoint | None = Field(default=None, description="LLM judge endpoint grading answers for the judge "
                                                             "reward (as eval's judge)")
    rubric: TextOrFile | None = Field(default=None, description="Rubric for the judge (default: the eval's)")
    merge: bool = Field(default=False, description="Also write a merged model beside the adapter")
    compute: ref_of("compute") | None = Field(  # type: ignore[valid-type]
        default=None, description="Compute block to launch with (default: the domain's only one, if any)")
    backend: str | None = Field(default=None, description="Backend name (default: trl_grpo)")

    @model_validator(mode="after")
    def _consistent(self) -> RewardBlock:
        if self.tune == "full" and self.lora is not None:
            raise PydanticCustomError("incompatible", "lora settings do not apply to tune = full "
                                      "(use lora or qlora, or drop lora)", {})
        if self.tune == "full" and self.merge:
            raise PydanticCustomError("incompatible", "merge applies to an adapter (tune = lora or qlora): tune = "
                                      "full writes the whole model already; drop merge", {})
        for name, value in self.rewards.items():
            if isinstance(value, FormatRule):
                if name in REWARD_METRICS:
                    raise PydanticCustomError("incompatible", "reward {name} is a metric: give it a weight, "
                                              "not a pattern", {"name": name})
            elif name not in REWARD_METRICS:
                raise PydanticCustomError("unknown_reward", "reward {name} is not a metric a reward can use "
                                          "({known}); a format rule is NAME = { pattern = \"...\"  weight = w }",
                                          {"name": name, "known": ", ".join(REWARD_METRICS)})
        if all((v.weight if isinstance(v, FormatRule) else v) == 0 for v in self.rewards.values()):
            raise PydanticCustomError("incompatible", "every reward weighs 0, so every answer scores the same and "
                                      "nothing is learned: give a reward a non-zero weight", {})
        if (self.prompts is None) == (self.data is None):
            raise PydanticCustomError("incompatible", "give the prompts as prompts = \"FILE.jsonl\" or as data = "
                                      "dataset.X (one of them)", {})
        if self.retrieval is not None and self.prompt is not None:
            raise PydanticCustomError("incompatible", "prompt does not apply with retrieval: the rag step's own "
                                      "prompt asks the model (drop prompt, or set it on the rag block)", {})
        if "judge" in self.rewards and self.judge is None:
            raise PydanticCustomError("incompatible", "reward judge needs judge = endpoint { url = ...  model = ... }",
                                      {})
        if self.judge is not None and "judge" not in self.rewards:
            raise PydanticCustomError("incompatible", "judge is set but no reward uses it: add judge = WEIGHT to "
                                      "rewards, or drop judge", {})
        if (self.batch_size * self.gradient_accumulation) % self.num_generations:
            raise PydanticCustomError("incompatible", "batch_size x gradient_accumulation ({n}) must be a multiple "
                                      "of num_generations ({g}): each prompt's answers form one group",
                                      {"n": self.batch_size * self.gradient_accumulation, "g": self.num_generations})
        return self
