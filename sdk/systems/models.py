"""The model kinds' opener (``opener`` of base_model, pretrain, finetune, align and reward): a local model, with
its adapter merged when the step trained one, opened from its applied artifact alone (the weights and tokenizer
its manifest records), asked like any other system. Torch and transformers load inside the opener."""

from __future__ import annotations

from typing import Any

from sdk.artifacts import Artifact


class ModelSystem:
    """A local model asked as a system: ``answer(question)`` (no sources); ``local`` is the eval's local model
    (log-likelihoods, batched generation) for those that score it."""

    def __init__(self, local: Any, step_id: str) -> None:
        self.local = local
        self.step_id = step_id

    def answer(self, question: str, max_new_tokens: int = 64) -> dict[str, Any]:
        return {"answer": self.local.generate(question, max_new_tokens), "sources": [], "cited": []}


def open_model(art: Artifact, spec: Any = None, **_: Any) -> ModelSystem:
    """Open a model step's artifact (``spec``: the recipe being run, read only for its trust_remote_code)."""
    from sdk.backends.eval.clients import local_model  # local: the eval's model loader, torch behind it

    return ModelSystem(local_model({art.step_id: art}, art.step_id, spec), art.step_id)
