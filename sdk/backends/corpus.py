"""Corpus ingestion for the Haystack backend (``corpus`` steps): files found by glob, read by format (text,
markdown, html, pdf, jsonl), cleaned, split into chunks, and deduplicated (exact, then near-duplicate).

The artifact is ``chunks.jsonl``, one ``{"id", "content", "meta": {"source", "page", "chunk_index",
"content_hash"}}`` per line. Haystack and pypdf are imported inside the functions that need them."""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from sdk.artifacts import Artifact
from sdk.backends.embedders import quiet_haystack
from sdk.errors import DataError, DslError
from sdk.jsonl import read_jsonl

EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl",
              ".html": "html", ".htm": "html", ".pdf": "pdf"}


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


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
    quiet_haystack()
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


# -------------------------------------------------------------------------------------------- chunks as Documents


def as_documents(chunks: list[dict[str, Any]]) -> list[Any]:
    from haystack import Document

    return [Document(id=c["id"], content=c["content"], meta=c["meta"]) for c in chunks]


def read_chunks(artifact: Artifact) -> list[dict[str, Any]]:
    path = artifact.path / artifact.outputs.get("chunks", "chunks.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
