"""``pretrain LABEL { from = base_model.X  corpus = corpus.Y }``: pre-training, from scratch or continued."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import TrainCommon
from sdk.spec.values import PositiveInt, Ref, ref_of


def compute_for(spec: Any, block: Any) -> Any:
    """The compute block a training step launches with: the one it names, else the domain's only one."""
    if "compute" not in type(block).model_fields:
        return None
    ref = getattr(block, "compute", None)
    if isinstance(ref, Ref):
        return spec.compute.get(ref.label)
    return next(iter(spec.compute.values()), None)


def with_compute(spec: Any, block: Any) -> dict[str, Any]:
    """A training step's configuration: its block, with the compute block it launches with in place of the ref."""
    config = block.model_dump(mode="json", by_alias=True)
    config.pop("backend", None)
    compute = compute_for(spec, block)
    if compute is not None:
        config["compute"] = compute.model_dump(mode="json")
    return config


@declare("pretrain", role="model", serving="model", opener="sdk.backends.eval.clients:open_model",
         backend=("transformers", "sdk.backends.training.pretrain:PretrainBackend",
                                             "pip install 'domain-dsl[train]'"),
         outputs=("model",), facets=content_facets, extra={"config": with_compute})
class PretrainBlock(TrainCommon):
    """Pre-training: from scratch when the base model has an architecture, else continued pre-training."""

    from_: ref_of("base_model", "pretrain") = Field(alias="from", description="Starting model")  # type: ignore[valid-type]
    corpus: ref_of("corpus") = Field(description="Corpus to train on")  # type: ignore[valid-type]
    block_size: Optional[PositiveInt] = Field(default=None, description="Tokens per packed block (default: the model's context, at most 1024)")
    holdout: float = Field(default=0.1, ge=0.0, lt=0.9, description="Share of the corpus held out for perplexity")
    learning_rate: float = Field(default=5e-4, gt=0, le=1.0, description="Peak learning rate")
    compute: Optional[ref_of("compute")] = Field(default=None, description="Compute block to launch with (default: the one compute block, if any)")  # type: ignore[valid-type]
    backend: Optional[str] = Field(default=None, description="Backend name (default: transformers)")
