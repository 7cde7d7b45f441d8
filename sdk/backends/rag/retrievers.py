"""The retriever registry and the query pipeline of the Haystack backend.

A retriever is one class, registered once under the name a rag block gives in ``retriever = ...``::

    @register
    class BM25Retriever(Retriever):
        name = "bm25"
        def add(self, p, block, store, top_k, base_dir) -> str: ...   # its components; returns the one whose
                                                                       # ``documents`` are its result
        def inputs(self, question, top_k) -> dict: ...                 # run inputs per component name

``hybrid`` composes ``bm25`` and ``dense`` through reciprocal-rank fusion, or through learned fusion parameters
(:mod:`sdk.backends.rag.fusion`) when ``fusion`` is given; the cross-encoder reranker is an optional last stage (:class:`Reranker`). :func:`query_pipeline` builds the pipeline, :func:`run_inputs` gives a
question's run inputs and :func:`last_component` names the result, all through the registry. The names must equal
the values of ``RagBlock.retriever`` (tests/test_retrievers.py checks it). Haystack is imported inside methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

from sdk.backends.rag.embedders import resolve_embedder
from sdk.errors import DslError

RETRIEVERS: dict[str, type[Retriever]] = {}


def register(cls: type[Retriever]) -> type[Retriever]:
    """Class decorator: make a retriever available under its ``name``."""
    RETRIEVERS[cls.name] = cls
    return cls


def retriever(name: str, fusion: Optional[dict[str, Any]] = None) -> Retriever:
    """The registered retriever called ``name`` (``fusion``: learned fusion parameters, used by ``hybrid``)."""
    try:
        return RETRIEVERS[name](fusion)
    except KeyError:
        raise DslError(f"unknown retriever {name!r} (known: {', '.join(sorted(RETRIEVERS))})") from None


def pool_size(k: int) -> int:
    """How many candidates a first stage fetches for a later one (fusion or reranking) that keeps k."""
    return max(4 * k, 20)


def store_component(block: Any, kind: str) -> Any:
    """The Haystack retriever class of the block's store for ``kind`` ("bm25" or "dense")."""
    if block.store.type == "pgvector":
        from haystack_integrations.components.retrievers.pgvector import (
            PgvectorEmbeddingRetriever,
            PgvectorKeywordRetriever,
        )

        return PgvectorKeywordRetriever if kind == "bm25" else PgvectorEmbeddingRetriever
    if block.store.type == "index":
        from sdk.backends.rag.index_store import (  # local: imports haystack and numpy
            IndexBM25Retriever,
            IndexEmbeddingRetriever,
        )

        return IndexBM25Retriever if kind == "bm25" else IndexEmbeddingRetriever
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever

    return InMemoryBM25Retriever if kind == "bm25" else InMemoryEmbeddingRetriever


class Retriever:
    """One way to retrieve chunks for a question from a document store."""

    name: ClassVar[str]
    output: ClassVar[str]  # the component whose ``documents`` are the result
    needs_vectors: ClassVar[bool] = False  # whether the index must hold embeddings

    def __init__(self, fusion: Optional[dict[str, Any]] = None) -> None:
        self.fusion = fusion  # learned fusion parameters (sdk.backends.rag.fusion), for retrievers that join others

    def add(self, p: Any, block: Any, store: Any, top_k: int, base_dir: Optional[Path]) -> str:
        """Add this retriever's components to pipeline ``p``, each keeping ``top_k``; returns :attr:`output`."""
        raise NotImplementedError

    def inputs(self, question: str, top_k: int) -> dict[str, dict[str, Any]]:
        """The run inputs for a question, per component name."""
        raise NotImplementedError


@register
class BM25Retriever(Retriever):
    """Keyword retrieval: Haystack's in-memory BM25, bm25s on the index store, or PostgreSQL full-text search on
    pgvector."""

    name = "bm25"
    output = "bm25"

    def add(self, p: Any, block: Any, store: Any, top_k: int, base_dir: Optional[Path]) -> str:
        p.add_component("bm25", store_component(block, "bm25")(document_store=store, top_k=top_k))
        return self.output

    def inputs(self, question: str, top_k: int) -> dict[str, dict[str, Any]]:
        return {"bm25": {"query": question, "top_k": top_k}}


@register
class DenseRetriever(Retriever):
    """Embedding retrieval: the question embedded by the block's embedder, nearest chunks by cosine (exact on
    the memory and index stores)."""

    name = "dense"
    output = "dense"
    needs_vectors = True

    def add(self, p: Any, block: Any, store: Any, top_k: int, base_dir: Optional[Path]) -> str:
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersTextEmbedder,
        )

        p.add_component("query_embedder", SentenceTransformersTextEmbedder(
            model=resolve_embedder(block.embedder, base_dir), progress_bar=False, local_files_only=True,
            normalize_embeddings=True))
        p.add_component("dense", store_component(block, "dense")(document_store=store, top_k=top_k))
        p.connect("query_embedder.embedding", "dense.query_embedding")
        return self.output

    def inputs(self, question: str, top_k: int) -> dict[str, dict[str, Any]]:
        return {"query_embedder": {"text": question}, "dense": {"top_k": top_k}}


@register
class HybridRetriever(Retriever):
    """bm25 and dense, each keeping top_k, joined by reciprocal-rank fusion into top_k; with learned ``fusion``
    parameters (:func:`sdk.backends.rag.fusion.learn_fusion`), each keeps the depth they were learned at and
    :class:`~sdk.backends.rag.fusion_joiner.FusionJoiner` joins them by those parameters.

    Larger fusion pools do not help: with Haystack's RRF constant (61) a chunk ranked low by both retrievers
    outscores one ranked first by only one of them, and on PubMedQA recall@5 fell as the pools grew
    (tests/benchmarks/bench_rag_retrieval.py)."""

    name = "hybrid"
    output = "joiner"
    needs_vectors = True
    parts = (BM25Retriever, DenseRetriever)

    def add(self, p: Any, block: Any, store: Any, top_k: int, base_dir: Optional[Path]) -> str:
        from haystack.components.joiners import DocumentJoiner

        outputs = [part().add(p, block, store, self._depth(top_k), base_dir) for part in self.parts]
        if self.fusion:
            from sdk.backends.rag.fusion_joiner import FusionJoiner  # local: imports haystack and numpy

            params = {k: v for k, v in self.fusion.items() if k not in ("depth", "rerank_cutoff")}
            p.add_component("joiner", FusionJoiner(params, inputs=[part.name for part in self.parts], top_k=top_k))
            for part, out in zip(self.parts, outputs):
                p.connect(f"{out}.documents", f"joiner.{part.name}")
            return self.output
        p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=top_k))
        for out in outputs:
            p.connect(f"{out}.documents", "joiner.documents")
        return self.output

    def _depth(self, top_k: int) -> int:
        """What each part fetches: top_k, or the depth the fusion parameters were learned at when larger."""
        return max(top_k, int((self.fusion or {}).get("depth") or 0))

    def inputs(self, question: str, top_k: int) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = {}
        for part in self.parts:
            data.update(part().inputs(question, self._depth(top_k)))
        data["joiner"] = {"top_k": top_k}
        return data


class Reranker:
    """The optional last stage: a sentence-transformers cross-encoder reordering the retriever's candidates
    (a pool of :func:`pool_size` of them) and keeping k."""

    output = "ranker"

    def add(self, p: Any, model: str, previous: str, k: int, base_dir: Optional[Path]) -> str:
        from haystack_integrations.components.rankers.sentence_transformers import (
            SentenceTransformersSimilarityRanker,
        )

        p.add_component("ranker", SentenceTransformersSimilarityRanker(model=resolve_embedder(model, base_dir), top_k=k))
        p.connect(f"{previous}.documents", "ranker.documents")
        return self.output

    def inputs(self, question: str, k: int) -> dict[str, dict[str, Any]]:
        return {"ranker": {"query": question, "top_k": k}}


def first_stage_k(block: Any, k: int, fusion: Optional[dict[str, Any]] = None) -> int:
    """What the retriever keeps: k, or the reranker's pool when a reranker follows (the learned ``rerank_cutoff``
    of ``fusion`` when it has one, at least k)."""
    if block.reranker and fusion and fusion.get("rerank_cutoff"):
        return max(k, int(fusion["rerank_cutoff"]))
    return pool_size(k) if block.reranker else k


def last_component(block: Any) -> str:
    """The component whose ``documents`` are the retrieval result."""
    return Reranker.output if block.reranker else retriever(block.retriever).output


def query_pipeline(block: Any, store: Any, generator: Any = None, top_k: Optional[int] = None,
                   base_dir: Optional[Path] = None, fusion: Optional[dict[str, Any]] = None) -> Any:
    """The retrieval pipeline: the block's retriever over ``store``, then the optional cross-encoder reranker.

    The retriever keeps top_k; only the reranker gets a larger pool (4 * top_k, at least 20, or the learned
    ``rerank_cutoff``) to reorder. ``fusion``: learned fusion parameters for ``hybrid`` (pass the same to
    :func:`run_inputs`)."""
    from haystack import Pipeline

    k = top_k or block.top_k
    p = Pipeline()
    last = retriever(block.retriever, fusion).add(p, block, store, first_stage_k(block, k, fusion), base_dir)
    if block.reranker:
        Reranker().add(p, block.reranker, last, k, base_dir)
    return p


def run_inputs(block: Any, question: str, k: int, fusion: Optional[dict[str, Any]] = None) -> dict[str, dict[str, Any]]:
    """The run inputs of :func:`query_pipeline`'s pipeline for a question, keeping k chunks."""
    data = retriever(block.retriever, fusion).inputs(question, first_stage_k(block, k, fusion))
    if block.reranker:
        data.update(Reranker().inputs(question, k))
    return data
