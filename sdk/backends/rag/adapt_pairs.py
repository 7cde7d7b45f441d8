"""Question -> gold chunk pairs for retrieval adaptation, and their split by source document.

Pairs come from the input named by ``adapt.pairs`` (read through its applied artifact, never the current recipe):

* ``dataset.X``: the rows of its file, the question being the last user turn (chat) or the instruction; the gold
  chunk is the row's ``chunk_id`` (or list ``chunk_ids``), else its ``sources`` (a source file, matched by stem,
  narrowed to the chunks holding the answer when there are several). Rows recording neither are skipped.
* ``synth.X``: its ``qa`` (or ``raft``) rows, each generated from the chunk it names in ``chunk_id``.
* ``eval.X``: its items tagged ``train`` (the eval set's training split), gold chunks from their ``sources``. The
  documents of its other (test) items are never trained on: their pairs are dropped and their chunks never serve
  as negatives.

The split is by source document (a hash of the source and the seed), so no chunk of a dev document is trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import DataError, DslError
from sdk.evalsets import source_key
from sdk.jsonl import read_jsonl
from sdk.metrics import normalize
from sdk.systems import applied_eval_items


@dataclass(frozen=True)
class Pair:
    question: str
    gold: tuple[str, ...]  # chunk ids, in the corpus
    source: str  # the source document of the gold chunks (the split key)


@dataclass
class Pairs:
    train: list[Pair]
    dev: list[Pair]
    held_out: set[str] = field(default_factory=set)  # documents never trained on: dev and any test documents
    skipped: int = 0  # rows or items with no usable gold chunk
    dropped: int = 0  # training pairs dropped because their document is a test document

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "dev": len(self.dev), "skipped": self.skipped, "dropped_test": self.dropped,
                "train_documents": len({p.source for p in self.train}),
                "dev_documents": len({p.source for p in self.dev})}


class ChunkIndex:
    """The corpus chunks by id and by source stem."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.by_id = {c["id"]: c for c in chunks}
        self.by_source: dict[str, list[dict[str, Any]]] = {}
        for c in chunks:
            self.by_source.setdefault(source_key(c["meta"].get("source")), []).append(c)

    def source_of(self, chunk_id: str) -> str:
        return source_key(self.by_id[chunk_id]["meta"].get("source")) or chunk_id

    def from_sources(self, sources: list[str], answers: list[str]) -> tuple[str, ...]:
        """The chunks of the named sources; where a source has several, those holding a reference answer."""
        out: list[str] = []
        for s in sources:
            chunks = self.by_source.get(source_key(s), [])
            if len(chunks) > 1:
                refs = [normalize(a) for a in answers if a and normalize(a)]
                chunks = [c for c in chunks if any(r in normalize(c["content"]) for r in refs)]
            out += [c["id"] for c in chunks]
        return tuple(dict.fromkeys(out))


def _ids(value: Any) -> list[str] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if isinstance(v, (str, int))]


def dataset_pairs(art: Any, index: ChunkIndex) -> tuple[list[Pair], int]:
    """Pairs from the rows of an applied dataset step's file (its ``source`` output), located errors for a chunk id
    that is not in the corpus."""
    config = art.manifest.get("config") or {}  # as applied (the dataset's own checks ran when it was applied)
    fmt, fields = str(config.get("format") or "chat"), dict(config.get("fields") or {})
    path = Path(art.outputs.get("source") or "")
    if not path.is_file():
        raise DslError(f"adapt.pairs = {art.step_id}: its file {path} is gone; run dsl apply")
    shown = path.name
    out: list[Pair] = []
    skipped = 0
    for n, row in read_jsonl(path, shown):
        if not isinstance(row, dict):
            skipped += 1
            continue
        question = _question(row, fmt, fields)
        answer = _answer(row, fmt, fields)
        chunk_ids = _ids(row.get("chunk_id", row.get("chunk_ids")))
        if chunk_ids:
            missing = [c for c in chunk_ids if c not in index.by_id]
            if missing:
                raise DataError(shown, n, f"chunk_id {missing[0]!r} is not a chunk of this rag's corpus",
                                "chunk ids are the id of a line of the corpus step's chunks.jsonl")
            gold = tuple(chunk_ids)
        else:
            gold = index.from_sources(_ids(row.get("sources")) or [], [answer] if answer else [])
        if not question or not gold:
            skipped += 1
            continue
        out.append(Pair(question, gold, index.source_of(gold[0])))
    return out, skipped


def _question(row: dict[str, Any], fmt: str, fields: dict[str, str]) -> str:
    if fmt == "instruction":
        q = row.get(fields.get("instruction", "instruction"))
        return q.strip() if isinstance(q, str) else ""
    msgs = row.get(fields.get("messages", "messages"))
    users = [m.get("content") for m in msgs or [] if isinstance(m, dict) and m.get("role") == "user"] \
        if isinstance(msgs, list) else []
    return users[-1].strip() if users and isinstance(users[-1], str) else ""


def _answer(row: dict[str, Any], fmt: str, fields: dict[str, str]) -> str:
    if fmt == "instruction":
        a = row.get(fields.get("output", "output"))
        return a if isinstance(a, str) else ""
    msgs = row.get(fields.get("messages", "messages"))
    said = [m.get("content") for m in msgs or [] if isinstance(m, dict) and m.get("role") == "assistant"] \
        if isinstance(msgs, list) else []
    return said[-1] if said and isinstance(said[-1], str) else ""


def synth_pairs(art: Any, index: ChunkIndex) -> tuple[list[Pair], int]:
    """Pairs from an applied synth step's rows: each question and the chunk it was generated from."""
    path = art.path / art.outputs.get("rows", "rows.jsonl")
    out, skipped = [], 0
    for n, row in read_jsonl(path, f"{art.step_id}/{path.name}"):
        question, chunk = (row.get("question"), row.get("chunk_id")) if isinstance(row, dict) else (None, None)
        if not isinstance(question, str) or not question.strip() or not isinstance(chunk, str):
            skipped += 1
            continue
        if chunk not in index.by_id:
            raise DataError(f"{art.step_id}/{path.name}", n, f"chunk_id {chunk!r} is not a chunk of this rag's "
                            "corpus", "generate the pairs from the rag's own corpus (synth { corpus = ... })")
        out.append(Pair(question.strip(), (chunk,), index.source_of(chunk)))
    return out, skipped


def eval_pairs(art: Any, index: ChunkIndex, base_dir: Path) -> tuple[list[Pair], set[str], int]:
    """Pairs from the items tagged ``train`` of an applied eval step's set, the documents of its other items, and
    how many training items had no gold chunk."""
    _, items, _ = applied_eval_items(art, base_dir)
    train = train_items(items, art.step_id)
    test_docs = {source_key(s) for it in items if "train" not in it.tags for s in it.sources}
    out, skipped = [], 0
    for it in train:
        gold = index.from_sources(it.sources, it.answers)
        if not gold:
            skipped += 1
            continue
        out.append(Pair(it.question, gold, index.source_of(gold[0])))
    return out, test_docs, skipped


def train_items(items: list[Any], step_id: str) -> list[Any]:
    """The items tagged ``train`` of eval step ``step_id``'s set; a DslError when none is (the plan asks it too)."""
    train = [it for it in items if "train" in it.tags]
    if not train:
        raise DslError(f"adapt.pairs = {step_id}: its eval set declares no training split (no item is tagged "
                       "\"train\"); tag the items to learn from with \"tags\": [\"train\"] (the others stay test items)")
    return train


def _bucket(source: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{source}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_by_document(pairs: list[Pair], share: float, seed: int, test_docs: set[str] = frozenset()) -> Pairs:
    """Train/dev by source document: a document's pairs all go one way; pairs of test documents are dropped."""
    kept = [p for p in pairs if p.source not in test_docs]
    docs = sorted({p.source for p in kept})
    if len(docs) < 2:
        raise DslError(f"adaptation needs pairs from at least 2 source documents (one to train on, one to decide "
                       f"on), found {len(docs)} ({len(kept)} pairs)")
    dev_docs = {d for d in docs if _bucket(d, seed) < share}
    if not dev_docs:  # a tiny set: the document with the smallest hash
        dev_docs = {min(docs, key=lambda d: _bucket(d, seed))}
    if dev_docs == set(docs):
        dev_docs.discard(max(docs, key=lambda d: _bucket(d, seed)))
    return Pairs(train=[p for p in kept if p.source not in dev_docs], dev=[p for p in kept if p.source in dev_docs],
                 held_out=dev_docs | set(test_docs), dropped=len(pairs) - len(kept))


def load_pairs(adapt: Any, inputs: dict[str, Any], chunks: list[dict[str, Any]], base_dir: Path) -> tuple[Pairs, ChunkIndex]:
    """The train/dev pairs of ``adapt.pairs`` over this corpus."""
    index = ChunkIndex(chunks)
    art = inputs[str(adapt.pairs)]
    test_docs: set[str] = set()
    if adapt.pairs.kind == "dataset":
        pairs, skipped = dataset_pairs(art, index)
    elif adapt.pairs.kind == "synth":
        pairs, skipped = synth_pairs(art, index)
    else:
        pairs, test_docs, skipped = eval_pairs(art, index, base_dir)
    if not pairs:
        raise DslError(f"adapt.pairs = {adapt.pairs}: no row names a gold chunk of this rag's corpus (rows need "
                       "chunk_id, or sources naming a corpus file)")
    split = split_by_document(pairs, adapt.dev_split, adapt.seed, test_docs)
    split.skipped = skipped
    return split, index
