"""``finetune LABEL { from = MODEL  data = dataset.X  method = lora }``: supervised fine-tuning with TRL."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.blocks.pretrain import with_compute
from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Lora, TrainCommon
from sdk.spec.paths import named_files
from sdk.spec.templates import chat_template_problems
from sdk.spec.values import PositiveInt, Problem, TextOrFile, ref_of


def _check(spec: Any, label: str, block: Any) -> list[Any]:
    """Chat data trains the model where its turn ends: the template must write an end-of-turn marker."""
    if block.data.kind == "synth":
        from sdk.spec.blocks.synth import training_problems

        problems = training_problems(spec, "finetune", label, "data")
        return problems or chat_template_problems(spec, label, block, "finetune")
    data = spec.get(block.data) if spec.has(block.data) else None
    if data is not None and data.format == "text":
        if "assistant_only_loss" in block.model_fields_set and block.assistant_only_loss:
            return [Problem(path=("finetune", label, "assistant_only_loss"), message=f"assistant_only_loss applies to "
                            f"chat and instruction data, and {block.data} is format text (it has no assistant turns)",
                            hint="drop assistant_only_loss: text data trains on every token")]
        return []
    return chat_template_problems(spec, label, block, "finetune")


@declare("finetune", role="model", serving="model", opener="sdk.backends.eval.clients:open_model",
         backend=("trl", "sdk.backends.training.finetune:FinetuneBackend",
                                             "pip install 'domain-dsl[train]'"),
         outputs=("tokenizer",), facets=content_facets, reads=lambda spec, block: named_files(spec, block),
         plan_check=_check, extra={"config": with_compute})
class FinetuneBlock(TrainCommon):
    """Supervised fine-tuning with TRL, full or through LoRA/QLoRA adapters."""

    from_: ref_of("@model") = Field(alias="from", description="Model to fine-tune")  # type: ignore[valid-type]
    data: ref_of("dataset", "synth") = Field(description="Dataset (or synth step of task qa or raft) to train on")  # type: ignore[valid-type]
    method: Literal["full", "lora", "qlora"] = Field(default="lora", description="full, lora, or qlora (4-bit NF4)")
    lora: Optional[Lora] = Field(default=None, description="LoRA settings (lora and qlora); defaults apply when omitted")
    max_length: PositiveInt = Field(default=512, description="Truncate examples to this many tokens")
    packing: bool = Field(default=False, description="Pack several examples per sequence (TRL's best-fit decreasing)")
    padding_free: bool = Field(default=True, description="Batch rows without padding (position ids per example, no "
                                                         "attention across rows) where the model supports it")
    assistant_only_loss: bool = Field(default=True, description="Compute the loss on assistant tokens only (chat)")
    chat_template: Optional[TextOrFile] = Field(default=None, description="Chat template used for training, serving and eval")
    merge: bool = Field(default=False, description="Also write a merged model beside the adapter")
    batch_size: PositiveInt = Field(default=4, description="Per-device batch size")
    compute: Optional[ref_of("compute")] = Field(default=None, description="Compute block to launch with")  # type: ignore[valid-type]
    backend: Optional[str] = Field(default=None, description="Backend name (default: trl)")

    @model_validator(mode="after")
    def _lora_needs_adapter_method(self) -> "FinetuneBlock":
        if self.method == "full" and self.lora is not None:
            raise PydanticCustomError(
                "incompatible", "lora settings do not apply to method = full (use lora or qlora, or drop lora)", {}
            )
        if self.method == "full" and self.merge:
            raise PydanticCustomError("incompatible", "merge applies to an adapter (method = lora or qlora): method "
                                      "= full writes the whole model already; drop merge", {})
        if self.packing and self.padding_free and "padding_free" in self.model_fields_set:
            raise PydanticCustomError("incompatible", "padding_free applies without packing (packed rows share one "
                                      "sequence already); drop padding_free or packing", {})
        return self
