"""``align LABEL { from = MODEL  pairs = "prefs.jsonl"  method = dpo  beta = 0.1 }``: preference tuning with TRL
(DPO and its loss variants, SimPO, ORPO, KTO), over LoRA/QLoRA adapters or all the weights, with the reference model
handled TRL's way."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.blocks.pretrain import with_compute
from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Lora, TrainCommon
from sdk.spec.paths import named_files, path_problem
from sdk.spec.templates import chat_template_problems
from sdk.spec.values import Fraction, PositiveInt, Problem, TextOrFile, ref_of

# TRL's DPOConfig.loss_type values (TRL 1.x); ipo is IPO, robust is cDPO-style, apo_* are anchored losses.
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
PAIR_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")  # kto: one answer and whether it is desirable
# Attributes that only some methods read, with the methods that read them (set elsewhere they are an error).
ONLY_FOR = {"loss": ("dpo",), "label_smoothing": ("dpo", "simpo"), "precompute_ref": ("dpo", "kto"),
            "desirable_weight": ("kto",), "undesirable_weight": ("kto",), "gamma": ("simpo",)}


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    problem = path_problem(spec, block.pairs) if check_files and isinstance(block.pairs, str) else None
    return [Problem(path=("align", label, "pairs"), message=problem)] if problem else []


def _plan_check(spec: Any, label: str, block: Any) -> list[Problem]:
    if not isinstance(block.pairs, str):  # synth.X: a synth step of task preference
        from sdk.spec.blocks.synth import training_problems

        problems = training_problems(spec, "align", label, "pairs")
        if not problems and block.method == "kto":
            problems = [Problem(path=("align", label, "pairs"), message=f"{block.pairs} makes chosen/rejected pairs, "
                                "and kto reads answers labelled good or bad", hint="use dpo, simpo or orpo")]
        if problems:
            return problems
    return chat_template_problems(spec, label, block, "align")


@declare("align", role="model", serving="model", opener="sdk.backends.eval.clients:open_model",
         backend=("trl_dpo", "sdk.backends.training.align:AlignBackend",
                                          "pip install 'domain-dsl[train]'"),
         outputs=("tokenizer",), check=_check, plan_check=lambda spec, label, block: _plan_check(spec, label, block),
         facets=content_facets,
         reads=lambda spec, block: named_files(spec, block, ("pairs",)),
         extra={"config": with_compute})
class AlignBlock(TrainCommon):
    """Preference tuning with TRL: DPO, SimPO or ORPO on chosen/rejected pairs, KTO on answers labelled good or
    bad."""

    from_: ref_of("@model") = Field(alias="from", description="Model to tune, usually a finetune")  # type: ignore[valid-type]
    pairs: str | ref_of("synth") = Field(  # type: ignore[valid-type]
        description="JSONL preference file, relative to the recipe: pairs {prompt, chosen, rejected} (dpo, simpo, "
                    "orpo) or {prompt, completion, label} rows (kto); text or chat messages. Or synth.X, a synth "
                    "step of task preference")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="Column mapping, e.g. { prompt = \"question\", chosen = \"good\" } "
                                               "(keys: prompt, chosen, rejected; with kto prompt, completion, label)")
    method: Literal["dpo", "simpo", "orpo", "kto"] = Field(
        default="dpo", description="Preference method: dpo (pick its variant with loss), simpo (pairs, no reference "
                                   "model, length-normalised reward with a target margin), orpo (pairs, no "
                                   "reference model), kto (answers labelled desirable or not)")
    loss: Literal[DPO_LOSSES] = Field(default="sigmoid",  # type: ignore[valid-type]
                                      description="DPO loss: sigmoid (DPO), ipo, hinge, robust, ... (TRL's loss_type; "
                                                  "dpo only)")
    beta: float = Field(default=0.1, gt=0, le=100, description="dpo, kto: strength of the pull towards the reference "
                                                                "model; simpo: reward scale (the paper uses 2-2.5); "
                                                                "orpo: weight of the odds-ratio term (lambda)")
    gamma: float = Field(default=0.5, ge=0, le=100, description="simpo: target margin between the chosen and the "
                                                                "rejected reward (TRL's simpo_gamma)")
    label_smoothing: Fraction = Field(default=0.0, description="Share of pairs assumed mislabelled (dpo: robust, "
                                                               "sigmoid; simpo)")
    desirable_weight: float | None = Field(default=None, gt=0, le=100,
                                           description="kto: weight of the desirable answers' loss (default 1.0)")
    undesirable_weight: float | None = Field(default=None, gt=0, le=100,
                                             description="kto: weight of the undesirable answers' loss (default 1.0)")
    tune: Literal["full", "lora", "qlora"] = Field(
        default="lora", description="Which weights train: full, lora, or qlora (as finetune's method); with an "
                                    "adapter the reference is the model with the adapter disabled")
    lora: Lora | None = Field(default=None, description="LoRA settings (lora and qlora)")
    precompute_ref: bool = Field(default=False, description="Compute the reference log-probs once before training "
                                                            "(dpo, kto)")
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0, description="Peak learning rate")
    max_length: PositiveInt = Field(default=512, description="Truncate prompt + answer to this many tokens")
    validation_split: float = Field(default=0.0, ge=0.0, lt=0.9, description="Share of pairs (kto: examples) held "
                                                                            "out for eval reward accuracy and margin")
    chat_template: TextOrFile | None = Field(default=None, description="Chat template (default: the model's)")
    merge: bool = Field(default=False, description="Also write a merged model beside the adapter")
    batch_size: PositiveInt = Field(default=4, description="Per-device batch size (pairs; kto: examples, at least 2)")
    compute: ref_of("compute") | None = Field(  # type: ignore[valid-type]
        default=None, description="Compute block to launch with (default: the domain's only one, if any)")
    backend: str | None = Field(default=None, description="Backend name (default: trl_dpo)")

    @model_validator(mode="after")
    def _consistent(self) -> AlignBlock:
        if self.tune == "full" and self.lora is not None:
            raise PydanticCustomError("incompatible", "lora settings do not apply to tune = full "
                                      "(use lora or qlora, or drop lora)", {})
        if self.tune == "full" and self.merge:
            raise PydanticCustomError("incompatible", "merge applies to an adapter (tune = lora or qlora): tune = "
                                      "full writes the whole model already; drop merge", {})
        for name, methods in ONLY_FOR.items():
            if self.method not in methods and getattr(self, name) != type(self).model_fields[name].default:
                raise PydanticCustomError("incompatible", "{name} does not apply to method = {method} (only to "
                                          "{methods}); drop it", {"name": name, "method": self.method,
                                                                 "methods": " and ".join(methods)})
        if self.method == "dpo" and self.loss == "exo_pair" and self.label_smoothing == 0:  # TRL refuses it at start
            raise PydanticCustomError("incompatible", "loss = exo_pair needs label_smoothing > 0 (the EXO paper uses "
                                      "1e-3); TRL refuses 0 when training starts", {})
        if self.label_smoothing >= 0.5:
            raise PydanticCustomError("incompatible", "label_smoothing = {v} assumes at least half the pairs are "
                                      "mislabelled, which turns every preference around: use a share below 0.5",
                                      {"v": self.label_smoothing})
        if self.method == "kto" and self.batch_size < 2:
            raise PydanticCustomError("incompatible", "method = kto needs batch_size >= 2: its KL estimate pairs each "
                                      "answer with another example's prompt in the same batch", {})
        keys = UNPAIRED_FIELDS if self.method == "kto" else PAIR_FIELDS
        bad = sorted(set(self.fields) - set(keys))
        if bad:
            raise PydanticCustomError("incompatible", "fields {bad} are not fields of method = {method} (it maps "
                                      "{keys})", {"bad": ", ".join(bad), "method": self.method,
                                                  "keys": ", ".join(keys)})
        return self
