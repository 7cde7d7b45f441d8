"""The Haystack component that joins retrievers' documents by learned fusion parameters (:func:`sdk.backends.rag.fusion.fuse`).

One input socket per retriever (``bm25``, ``dense``), so each list is known by name (a weight belongs to a
retriever, not to a position). Serialised as ``{type, init_parameters}`` like every Haystack component; it lives
outside Haystack's deserialisation allowlist, so ``Pipeline.loads`` needs ``allowed_modules=["sdk.backends.rag.fusion_joiner"]``.

Haystack is imported here at module level: this module is itself only imported inside the functions that build a
query pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict

from sdk.backends.rag.fusion import fuse


@component
class FusionJoiner:
    """Join named document lists by :func:`~sdk.backends.rag.fusion.fuse` with ``params``, keeping ``top_k``."""

    def __init__(self, params: dict[str, Any], inputs: list[str] | None = None, top_k: int | None = None) -> None:
        self.params = dict(params)
        self.inputs = list(inputs or ["bm25", "dense"])
        self.top_k = top_k
        fuse({name: [] for name in self.inputs}, self.params)  # bad parameters fail when the pipeline is built
        component.set_input_types(self, **{name: list[Document] for name in self.inputs})

    @component.output_types(documents=list[Document])
    def run(self, top_k: int | None = None, **lists: list[Document]) -> dict[str, list[Document]]:
        """The fused documents, best first, each with its fused score."""
        by_id: dict[str, Document] = {}
        rankings = {}
        for name in self.inputs:
            docs = lists.get(name) or []
            rankings[name] = [(d.id, float(d.score or 0.0)) for d in docs]
            for d in docs:
                by_id.setdefault(d.id, d)
        keep = top_k or self.top_k
        fused = fuse(rankings, self.params)[:keep] if keep else fuse(rankings, self.params)
        return {"documents": [dataclasses.replace(by_id[i], score=s) for i, s in fused]}

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, params=self.params, inputs=self.inputs, top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionJoiner:
        return default_from_dict(cls, data)
