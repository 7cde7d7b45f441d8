"""``align LABEL { from = MODEL  pairs = "prefs.jsonl"  method = dpo  beta = 0.1 }``: preference tuning with
TRL's DPOTrainer, over LoRA/QLoRA adapters or all the weights, with the reference model handled TRL's way."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Lora, TrainCommon
from sdk.spec.paths import named_files, path_problem
from sdk.spec.templates import chat_template_problems
from sdk.spec.values import Fraction, PositiveInt, Problem, TextOrFile, ref_of

# TRL's DPOConfig.loss_type values (TRL 1.x); ipo is IPO, robust is cDPO-style, apo_* are anchored losses.
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
PAIR_FIELDS = ("prompt", "chosen", "rejected")


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    problem = path_problem(spec, block.pairs) if check_files else None
    return [Problem(path=("align", label, "pairs"), message=problem)] if problem else []


@declare("align", role="model", backend=("trl_dpo", "sdk.backends.align:AlignBackend",
                                          "pip install 'domain-dsl[train]'"),
         outputs=("tokenizer",), check=_check, plan_check=lambda spec, label, block: chat_template_problems(spec, label, block, "align"), facets=content_facets,
         reads=lambda spec, block: named_files(spec, block, ("pairs",)))
class AlignBlock(TrainCommon):
    """Preference tuning (DPO and its loss variants) with TRL, on chosen/rejected answer pairs."""

    from_: ref_of("@model") = Field(alias="from", description="Model to tune, usually a finetune")  # type: ignore[valid-type]
    pairs: str = Field(description="JSONL of preference pairs {prompt, chosen, rejected} (text or chat messages), "
                                   "relative to the recipe")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="Column mapping, e.g. { prompt = \"question\", chosen = \"good\" } "
                                               "(keys: prompt, chosen, rejected)")
    method: Literal["dpo"] = Field(default="dpo", description="Preference method (dpo; pick its variant with loss)")
    loss: Literal[DPO_LOSSES] = Field(default="sigmoid",  # type: ignore[valid-type]
                                      description="DPO loss: sigmoid (DPO), ipo, hinge, robust, ... (TRL's loss_type)")
    beta: float = Field(default=0.1, gt=0, le=100, description="Strength of the pull towards the reference model")
    label_smoothing: Fraction = Field(default=0.0, description="Share of pairs assumed mislabelled (robust, sigmoid)")
    tune: Literal["full", "lora", "qlora"] = Field(
        default="lora", description="Which weights train: full, lora, or qlora (as finetune's method); with an "
                                    "adapter the reference is the model with the adapter disabled")
    lora: Lora | None = Field(default=None, description="LoRA settings (lora and qlora)")
    precompute_ref: bool = Field(default=False, description="Compute the reference log-probs once before training")
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0, description="Peak learning rate")
    max_length: PositiveInt = Field(default=512, description="Truncate prompt + answer to this many tokens")
    validation_split: float = Field(default=0.0, ge=0.0, lt=0.9, description="Share of pairs held out for eval "
                                                                            "reward accuracy")
    chat_template: TextOrFile | None = Field(default=None, description="Chat template (default: the model's)")
    merge: bool = Field(default=False, description="Also write a merged model beside the adapter")
    batch_size: PositiveInt = Field(default=4, description="Per-device batch size (pairs)")
    backend: str | None = Field(default=None, description="Backend name (default: trl_dpo)")

    @model_validator(mode="after")
    def _consistent(self) -> AlignBlock:
        if self.tune == "full" and self.lora is not None:
            raise PydanticCustomError("incompatible", "lora settings do not apply to tune = full "
                                      "(use lora or qlora, or drop lora)", {})
        bad = sorted(set(self.fields) - set(PAIR_FIELDS))
        if bad:
            raise PydanticCustomError("incompatible", "fields {bad} are not preference fields (it maps prompt, "
                                      "chosen, rejected)", {"bad": ", ".join(bad)})
        return self
