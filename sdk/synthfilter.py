"""The synth step's filters, with a ledger: every row that goes in comes out kept or dropped with a reason.

``filter_rows(rows, options=..., eval_items=...)`` runs, in this order, each row stopping at its first reason:

1. ``empty`` (no question or no answer, or one under ``min_chars``) and ``too_long`` (the question or the answer
   over ``max_chars``);
2. ``judge``: the row's ``judge_score`` (when the synth step attached one) under ``judge_min``;
3. ``unsupported``: the answer is not supported by its chunk (``support``: the share of the answer's content
   words found in the chunk is under ``support_threshold``, or the answer states a number the chunk lacks);
4. ``contamination``: the row overlaps an item of one of the recipe's eval sets (``sdk.synthfilter_overlap``:
   a shared 13-gram, or a near-duplicate robust to word order and synonyms); the entry names the item;
5. ``exact_duplicate`` (same normalised text) and ``near_duplicate`` (MinHash LSH over word 3-shingles, exact
   Jaccard >= ``near_threshold``; or cosine >= ``near_threshold`` of the ``embed`` callable's vectors when
   ``dedupe = embedding``): the first occurrence is kept and named in the entry.

Rows in == rows kept + rows dropped, always; ``ledger`` makes the ledger.json record of it. Pure Python on
datasketch, imported when first used (numpy too, for embeddings)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sdk.metrics import normalize
from sdk.synthfilter_overlap import NEAR_THRESHOLD, contaminated, overlaps
from sdk.synthfilter_text import (
    NUM_PERM,
    answer_of,
    content_words,
    is_number,
    jaccard,
    minhashes,
    question_of,
    row_text,
    shingles,
    stem,
)

__all__ = ["DEFAULTS", "REASONS", "contaminated", "filter_rows", "ledger", "support"]

DEFAULTS: dict[str, Any] = {
    "dedupe": "near",            # none | exact | near | embedding (exact duplicates go in every mode but none)
    "near_threshold": 0.85,      # Jaccard of word 3-shingles (near) or cosine (embedding)
    "contamination": True,
    "contamination_threshold": NEAR_THRESHOLD,  # weighted word overlap with an eval item (above 1: n-grams only)
    "ngram": 13,
    "supported": True,
    "support_threshold": 0.5,    # share of the answer's content words found in its chunk
    "min_chars": 1,              # the shortest question and answer kept (characters, each)
    "max_chars": 4000,           # the longest question or answer kept (0: no limit)
    "judge_min": None,           # drop rows whose judge_score is under it; rows without a score are kept
}
DEDUPE = ("none", "exact", "near", "embedding")
REASONS = ("empty", "too_long", "judge", "unsupported", "contamination", "exact_duplicate", "near_duplicate")

# words an answer may use about its source without the source holding them
_META_WORDS = ("according answer based chunk context document passage question says states stated text therefore "
               "hence step quote cite reason relies mentions shows indicates sentence")
_META = frozenset(stem(w) for w in _META_WORDS.split())
_MARKERS = re.compile(r"##\s*(begin|end)_quote\s*##|<\s*answer\s*>\s*:?|\[\d+(?:\s*,\s*\d+)*\]", re.IGNORECASE)

Embed = Callable[[list[str]], Sequence[Sequence[float]]]


def options_of(options: dict[str, Any] | None) -> dict[str, Any]:
    """The filter options over their defaults (``None`` values take the default); unknown names are an error."""
    unknown = sorted(set(options or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown filter option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}}
    if out["dedupe"] is True or out["dedupe"] is False:
        out["dedupe"] = "near" if out["dedupe"] else "none"
    if out["dedupe"] not in DEDUPE:
        raise ValueError(f"filter option dedupe = {out['dedupe']!r}: expected one of {', '.join(DEDUPE)}")
    return out


def support(answer: str, chunk: str) -> tuple[float, list[str]]:
    """(share of the answer's distinct content words found in the chunk, the missing ones in order). Numbers
    count like words; a missing number makes the answer unsupported whatever the share."""
    words = [w for w in dict.fromkeys(content_words(_MARKERS.sub(" ", answer))) if w not in _META]
    if not words:
        return 1.0, []
    have = set(content_words(chunk))
    missing = [w for w in words if w not in have]
    return 1 - len(missing) / len(words), missing


def _row_id(row: dict[str, Any], index: int) -> str:
    rid = row.get("id")
    return str(rid) if rid is not None else f"#{index}"


def _drop(rid: str, reason: str, detail: str, **extra: str) -> dict[str, Any]:
    return {"id": rid, "reason": reason, "detail": detail, **extra}


def _basic(row: dict[str, Any], rid: str, opts: dict[str, Any]) -> dict[str, Any] | None:
    question, answer = question_of(row).strip(), answer_of(row).strip()
    if not question or not answer:
        return _drop(rid, "empty", f"no {'question' if not question else 'answer'}")
    if "rejected" in row and not str(row["rejected"] or "").strip():
        return _drop(rid, "empty", "no rejected answer")
    fields = {"question": question, "answer": answer}
    if "rejected" in row:
        fields["rejected"] = str(row["rejected"]).strip()
    name, short = min(fields.items(), key=lambda kv: len(kv[1]))
    if len(short) < opts["min_chars"]:
        return _drop(rid, "empty", f"the {name} has {len(short)} characters, under min_chars = {opts['min_chars']}")
    name, long = max(fields.items(), key=lambda kv: len(kv[1]))
    if opts["max_chars"] and len(long) > opts["max_chars"]:
        return _drop(rid, "too_long", f"the {name} has {len(long):,} characters, over max_chars = "
                     f"{opts['max_chars']:,}")
    score = row.get("judge_score")
    if opts["judge_min"] is not None and isinstance(score, (int, float)) and score < opts["judge_min"]:
        return _drop(rid, "judge", f"judge score {score:g} under judge_min = {opts['judge_min']:g}")
    chunk = row.get("chunk")
    if opts["supported"] and isinstance(chunk, str) and chunk.strip():
        share, missing = support(answer, chunk)
        numbers = [w for w in missing if is_number(w)]
        if numbers or share < opts["support_threshold"]:
            why = (f"the number(s) {', '.join(numbers[:5])} are not in the chunk" if numbers else
                   f"{share:.0%} of the answer's content words are in the chunk (support_threshold = "
                   f"{opts['support_threshold']:g}); missing: {', '.join(missing[:8])}")
            return _drop(rid, "unsupported", why)
    return None


def _exact(texts: list[str], ids: list[str]) -> dict[int, dict[str, Any]]:
    first: dict[str, int] = {}
    out: dict[int, dict[str, Any]] = {}
    for i, text in enumerate(texts):
        key = normalize(text)
        if key in first:
            j = first[key]
            out[i] = _drop(ids[i], "exact_duplicate", f"same text as row {ids[j]} (kept)", duplicate_of=ids[j])
        else:
            first[key] = i
    return out


def _near(texts: list[str], ids: list[str], live: list[int], threshold: float) -> dict[int, dict[str, Any]]:
    from datasketch import MinHashLSH

    sets = {i: shingles(texts[i]) for i in live}
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    out: dict[int, dict[str, Any]] = {}
    for i, mh in zip(live, minhashes(sets[i] for i in live)):
        best = max(((jaccard(sets[i], sets[j]), -j) for j in lsh.query(mh)), default=None)
        if best is not None and best[0] >= threshold:
            j = -best[1]
            out[i] = _drop(ids[i], "near_duplicate", f"{best[0]:.2f} shingle Jaccard with row {ids[j]} (kept; "
                           f"near_threshold = {threshold:g})", duplicate_of=ids[j])
        else:
            lsh.insert(i, mh)
    return out


def _embedded(texts: list[str], ids: list[str], live: list[int], threshold: float,
              embed: Embed) -> dict[int, dict[str, Any]]:
    import numpy as np

    if not live:
        return {}
    vecs = np.asarray(embed([texts[i] for i in live]), dtype=np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    out: dict[int, dict[str, Any]] = {}
    kept: list[int] = []  # positions in live
    for start in range(0, len(live), 512):
        block = vecs[start:start + 512] @ vecs[: start + 512].T
        for a in range(block.shape[0]):
            p = start + a
            sims = block[a, kept] if kept else np.zeros(0)
            if sims.size and float(sims.max()) >= threshold:
                j = kept[int(sims.argmax())]
                out[live[p]] = _drop(ids[live[p]], "near_duplicate", f"cosine {float(sims.max()):.2f} with row "
                                     f"{ids[live[j]]} (kept; near_threshold = {threshold:g})",
                                     duplicate_of=ids[live[j]])
            else:
                kept.append(p)
    return out


def filter_rows(rows: list[dict[str, Any]], *, options: dict[str, Any] | None,
                eval_items: dict[str, list[tuple[str, str]]] | None, embed: Embed | None = None,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept rows in their order, dropped entries ``{"id", "reason", "detail"}`` plus ``eval_item`` for
    contamination and ``duplicate_of`` for duplicates). ``options`` is the synth block's ``filters`` map
    (``DEFAULTS`` for its names); ``eval_items`` maps an eval step id to ``[(item_id, text)]``; ``embed`` turns
    texts into vectors for ``dedupe = embedding``."""
    opts = options_of(options)
    if opts["dedupe"] == "embedding" and embed is None:
        raise ValueError("filter option dedupe = embedding needs an embed callable")
    ids = [_row_id(r, i) for i, r in enumerate(rows)]
    drops: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        entry = _basic(row, ids[i], opts)
        if entry is not None:
            drops[i] = entry
    live = [i for i in range(len(rows)) if i not in drops]
    if opts["contamination"] and eval_items and live:
        found = overlaps([rows[i] for i in live], eval_items, opts["ngram"], opts["contamination_threshold"])
        for pos, hit in found.items():
            drops[live[pos]] = _drop(ids[live[pos]], "contamination", hit.detail(opts["ngram"]), eval_item=hit.item)
        live = [i for i in live if i not in drops]
    texts = [row_text(r) for r in rows]
    if opts["dedupe"] != "none":
        same = _exact([texts[i] for i in live], [ids[i] for i in live])
        drops.update({live[k]: entry for k, entry in same.items()})
        live = [i for i in live if i not in drops]
    if opts["dedupe"] == "near":
        drops.update(_near(texts, ids, live, opts["near_threshold"]))
    elif opts["dedupe"] == "embedding" and embed is not None:
        drops.update(_embedded(texts, ids, live, opts["near_threshold"], embed))
    kept = [row for i, row in enumerate(rows) if i not in drops]
    dropped = [drops[i] for i in sorted(drops)]
    assert len(kept) + len(dropped) == len(rows)
    return kept, dropped


def ledger(n_in: int, kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger.json record: ``{"in", "out", "dropped", "by_reason"}``; refuses a count that does not add up."""
    if n_in != len(kept) + len(dropped):
        raise ValueError(f"ledger does not add up: {n_in} rows in, {len(kept)} kept + {len(dropped)} dropped")
    return {"in": n_in, "out": len(kept), "dropped": dropped,
            "by_reason": dict(sorted(Counter(d["reason"] for d in dropped).items()))}
