"""Corpus ingestion for the Haystack backend (``corpus`` steps): files found by glob, read by format (text,
markdown, html, pdf, jsonl), cleaned, split into chunks, and deduplicated (exact, then near-duplicate).

The artifact is ``chunks.jsonl``, one ``{"id", "content", "meta": {"source", "chunk_index", "content_hash", and where
the chunk starts: "line" (text, markdown, jsonl), "heading" (markdown), "page" (pdf)}}`` per line. Haystack and
pypdf are imported inside the functions that need them.

Each file is opened once, after the plan's confinement check, by descriptor and without following a link
(:func:`read_once`): the bytes that are hashed (and compared with the hash the plan recorded, which lineage keeps)
are the bytes that are parsed, so a file swapped for a link between plan and read is refused, never indexed. Files
are limited in size (the block's ``max_file_mb``), and text is split in bounded segments, so one huge line cannot
take memory without bound."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Optional

from sdk.artifacts import Artifact
from sdk.backends.rag.embedders import quiet_haystack
from sdk.errors import DataError, DslError
from sdk.jsonl import parse_jsonl
from sdk.spec.paths import allowed_roots, expand, within_roots

EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl",
              ".html": "html", ".htm": "html", ".pdf": "pdf"}


def rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


SEGMENT = 1 << 20  # characters of text split at a time: one huge line is cut here, not held whole by the splitter


def corpus_files(spec: Any, block: Any) -> list[Path]:
    """The regular files the block's globs match, confined to the recipe's folder (or the domain's roots)."""
    files: list[Path] = []
    for pattern in block.paths:
        found, problem = expand(spec, pattern)
        if problem:
            raise DslError(f"corpus: {problem}")
        files += found
    return list(dict.fromkeys(files))


def read_once(spec: Any, path: Path, shown: str, max_mb: int) -> tuple[bytes, str]:
    """(bytes, sha256) of a corpus file, read once through one descriptor: opened without following a link at
    its resolved path, checked to be a regular file inside the allowed roots (the descriptor's own path, so a swap
    after the check cannot pass) and at most ``max_mb`` MiB."""
    limit = max_mb * 2**20
    try:
        fd = os.open(path.resolve(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise DataError(shown, None, f"cannot be opened ({e.strerror or e}; a link swapped in after the plan is "
                                     "refused)") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(shown, None, "is not a regular file; only regular files are read")
        real = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists(f"/proc/self/fd/{fd}") else path.resolve()
        if not within_roots(real, allowed_roots(spec)):
            raise DataError(shown, None, f"leads outside the recipe's folder (to {real}); not read")
        if st.st_size > limit:
            raise DataError(shown, None, f"is {st.st_size / 2**20:.1f} MiB, over the corpus limit of {max_mb} MiB",
                            "raise max_file_mb in the corpus block")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(shown, None, f"grew over the corpus limit of {max_mb} MiB while read",
                        "raise max_file_mb in the corpus block")
    return data, hashlib.sha256(data).hexdigest()


def decode_text(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(shown, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def segments(text: str, size: int = SEGMENT) -> list[tuple[int, str]]:
    """(offset, piece) of ``text`` cut into pieces of at most ``size`` characters, at a line break (else a space)
    where there is one: a splitter then never holds more than one piece's words."""
    out, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start + size // 2, end)
        cut = cut if cut > 0 else text.rfind(" ", start + size // 2, end)
        cut = cut + 1 if cut > 0 else end
        out.append((start, text[start:cut]))
        start = cut
    out.append((start, text[start:]))
    return out


def format_of(path: Path, block: Any) -> str:
    if block.format != "auto":
        return str(block.format)
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(str(path), None, f"cannot tell the format of {path.name} from its extension",
                        "set format = text | markdown | jsonl | html | pdf in the corpus block")
    return fmt


def jsonl_rows(rows: Any, shown: str, text_field: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for n, obj in rows:
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            raise DataError(shown, n, f"row has no string field {text_field!r}", "set text_field in the corpus block")
        out.append((obj[text_field], {"line": n}))
    return out


class Originals(dict):
    """source -> the text its chunks are found in for their line (and, for markdown, heading)."""


def convert(files: list[Path], block: Any, spec: Any, warn: Any,
            planned: Optional[dict[str, str]] = None) -> tuple[list[Any], list[str], Originals]:
    """Files -> Haystack Documents (meta: source; line for jsonl rows, page for pdf pages). Each file is read
    once (:func:`read_once`); its hash must be the one the plan recorded (``planned``: path -> sha256), so lineage
    names what was read. Unreadable PDFs are skipped with a warning."""
    quiet_haystack()
    from haystack import Document
    from haystack.dataclasses import ByteStream

    base = spec.base_dir
    docs: list[Any] = []
    skipped: list[str] = []
    originals = Originals()
    for path in files:
        shown = rel(path, base)
        fmt = format_of(path, block)
        data, digest = read_once(spec, path, shown, getattr(block, "max_file_mb", 64))
        key = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        if planned and key in planned and planned[key] != digest:
            raise DataError(shown, None, "changed after the plan hashed it (a different file is there now); "
                                         "run dsl apply again")
        if fmt == "jsonl":
            rows = parse_jsonl(decode_text(data, shown).split("\n"), shown, objects=False)
            for text, meta in jsonl_rows(rows, shown, block.text_field):
                docs.append(Document(content=text, meta={"source": shown, **meta}))
            continue
        if fmt == "pdf":
            pages = _pdf_pages(data, shown, warn)
            if pages is None:
                skipped.append(shown)
                continue
            docs += [Document(content=t, meta={"source": shown, "page": i + 1}) for i, t in enumerate(pages) if t.strip()]
            continue
        if fmt == "text":
            text = decode_text(data, shown)
        else:
            try:
                result = _converter(fmt).run(sources=[ByteStream(data=data, meta={"file_path": shown})])
            except Exception as e:  # noqa: BLE001 - a converter failure names the file
                raise DataError(shown, None, f"cannot read as {fmt}: {e}") from None
            text = "\n".join(d.content for d in result["documents"] if d.content)
        if fmt in ("text", "markdown"):
            originals[shown] = (fmt, decode_text(data, shown) if fmt == "markdown" else text)
        for _, piece in segments(text):
            if piece.strip():
                docs.append(Document(content=piece, meta={"source": shown}))
    return docs, skipped, originals


def _converter(fmt: str) -> Any:
    from haystack.components.converters import HTMLToDocument, MarkdownToDocument, TextFileToDocument

    if fmt == "markdown":
        return MarkdownToDocument(progress_bar=False)
    if fmt == "html":
        return HTMLToDocument()
    return TextFileToDocument()


def _pdf_pages(data: bytes, shown: str, warn: Any) -> Optional[list[str]]:
    """Each page's text, through Haystack's PyPDFToDocument; None (with a warning) when the PDF cannot be read."""
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            warn(f"skipping {shown}: the PDF is encrypted")
            return None
        from haystack.components.converters import PyPDFToDocument
        from haystack.dataclasses import ByteStream

        result = PyPDFToDocument().run(sources=[ByteStream(data=data, meta={"file_path": shown})])
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


def shingles(text: str, n: int = 5) -> set[str]:
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
    sets = [shingles(c["content"]) for c in unique]
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


def ingest(spec: Any, block: Any, label: str, warn: Any,
           planned: Optional[dict[str, str]] = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    files = corpus_files(spec, block)
    if not files:
        raise DslError(f"corpus.{label}: the globs {block.paths} match no file")
    docs, skipped, originals = convert(files, block, spec, warn, planned)
    if not docs:
        raise DslError(f"corpus.{label}: no readable text in {len(files)} file(s)" +
                       (f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""))
    pieces = split_documents(docs, block)
    chunks: list[dict[str, Any]] = []
    per_source: dict[str, int] = {}
    where = Locator(originals)
    for d in pieces:
        text = (d.content or "").strip()
        if len(text) < block.min_chars:
            continue
        source = d.meta.get("source", "")
        index = per_source.get(source, 0)
        per_source[source] = index + 1
        h = content_hash(text)
        meta: dict[str, Any] = {"source": source, "chunk_index": index, "content_hash": h}
        if "page" in d.meta:  # a PDF page
            meta["page"] = int(d.meta["page"])
        if "line" in d.meta:  # a JSONL row's line number
            meta["line"] = int(d.meta["line"])
        meta.update(where(source, text))
        chunks.append({"id": f"{source}#{index}", "content": text, "meta": meta})
    before = len(chunks)
    chunks, exact, near = dedupe(chunks, block.dedupe, block.near_threshold)
    if not chunks:
        raise DslError(f"corpus.{label}: the corpus is empty after cleaning and deduplication ({before} chunks before)")
    metrics = {"files": len(files), "files_skipped": len(skipped), "documents": len(docs), "chunks": len(chunks),
               "duplicates_dropped": exact + near, "exact_duplicates": exact, "near_duplicates": near}
    return chunks, metrics


class Locator:
    """Where a chunk starts in its file: ``line`` (1-based) and, for markdown, the ``heading`` above it. Chunks
    of a file come in order, so each is searched from where the previous one started (its first words, with any
    markup or whitespace between them)."""

    def __init__(self, originals: Originals) -> None:
        self.originals = originals
        self.cursor: dict[str, tuple[int, int]] = {}  # source -> (offset, line) of the last chunk found
        self.headings: dict[str, tuple[list[int], list[str]]] = {}

    def __call__(self, source: str, text: str) -> dict[str, Any]:
        if source not in self.originals:
            return {}
        fmt, raw = self.originals[source]
        pos, line = self.cursor.get(source, (0, 1))
        words = re.findall(r"\w+", text[:300])
        window = max(1 << 16, 20 * len(text))  # the next chunk starts near the last one: never scan a whole file
        for n in (4, 1):
            if len(words) >= 1:
                found = re.compile(r"\W+".join(re.escape(w) for w in words[:n])).search(raw, pos, pos + window)
                if found:
                    line += raw.count("\n", pos, found.start())
                    pos = found.start()
                    break
        self.cursor[source] = (pos, line)
        out: dict[str, Any] = {"line": line}
        if fmt == "markdown":
            if source not in self.headings:
                marks = [(m.start(), m.group(1).strip()) for m in
                         re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", raw, re.M)]
                self.headings[source] = ([m[0] for m in marks], [m[1] for m in marks])
            starts, titles = self.headings[source]
            i = bisect.bisect_right(starts, pos) - 1
            if i >= 0:
                out["heading"] = titles[i]
        return out


def location(meta: dict[str, Any]) -> str:
    """Where a chunk comes from, as people cite it: ``docs/sip.md:12 (Registration)``, ``slides.pdf page 3``."""
    source = str(meta.get("source") or "?")
    if meta.get("page") is not None:
        return f"{source} page {meta['page']}"
    where = f"{source}:{meta['line']}" if meta.get("line") is not None else source
    return f"{where} ({meta['heading']})" if meta.get("heading") else where


# -------------------------------------------------------------------------------------------- chunks as Documents


def as_documents(chunks: list[dict[str, Any]]) -> list[Any]:
    from haystack import Document

    return [Document(id=c["id"], content=c["content"], meta=c["meta"]) for c in chunks]


def read_chunks(artifact: Artifact) -> list[dict[str, Any]]:
    path = artifact.path / artifact.outputs.get("chunks", "chunks.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
