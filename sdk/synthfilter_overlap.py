"""Contamination: which generated rows overlap an item of one of the recipe's eval sets.

Two tests, and a row is contaminated when either fires:

- **13-gram overlap** (the eval sets' own check, ``sdk.evalsets``, on the same ``sdk.metrics.ngrams``): the row
  shares an n-gram of normalised words with the item; the score is the share of the item's n-grams found.
- **near-duplicate overlap**, robust to a new word order and to synonyms: both texts become sets of content
  words (``sdk.synthfilter_text``: normalised, stop words out, lightly stemmed), datasketch's MinHash LSH finds
  the candidate pairs (word-set Jaccard ``CANDIDATE_JACCARD`` or more, so word order never matters), and each
  pair is scored exactly as a rarity-weighted overlap::

      score = w(item & row) / (w(item) + w(row - item) / 2)      w(S) = sum of log((1 + N + 100) / df(word))^2

  where ``df`` counts the texts (rows and items) that hold the word among the N compared (plus a background of
  ``BACKGROUND`` = 100 texts that hold none, so a word that every one of a few texts shares still counts). Rare words (``Nmfaf_3daDataManagement``,
  ``SCMA``) weigh most, so two template questions that differ only in the term they ask about score low, while
  a paraphrase that swaps common words for synonyms keeps most of the weight. The row's own extra words count
  half, so a row that holds the item plus a longer answer still matches. A pair scores only when it shares at
  least ``MIN_SHARED`` content words (or the two sets are equal): a one-word item never matches every row that
  mentions its word.

On real TeleQnA (tests/_paraphrase.py: 1,000 items planted verbatim and paraphrased among 8,000 other items),
threshold 0.6 finds every verbatim row, about 97% of the paraphrased ones, and flags about 1% of the others
(many of those are TeleQnA's own near-duplicate questions); docs/data.md has the measured figures.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sdk.metrics import ngrams
from sdk.synthfilter_text import NUM_PERM, content_words, minhashes, question_of, row_text

NEAR_THRESHOLD = 0.6
CANDIDATE_JACCARD = 0.3
MIN_SHARED = 3
BACKGROUND = 100  # texts assumed to lack every word, so a word all of a few texts share still weighs something


@dataclass(frozen=True)
class Overlap:
    eval_id: str
    item_id: str
    score: float
    how: str  # "ngram" (share of the item's n-grams) or "near" (weighted overlap)

    @property
    def item(self) -> str:
        return f"{self.eval_id}:{self.item_id}"

    def detail(self, n: int) -> str:
        if self.how == "near":
            return f"near-duplicate of eval item {self.item} (weighted word overlap {self.score:.2f})"
        return f"shares {n}-grams with eval item {self.item} ({self.score:.0%} of the item's {n}-grams)"


def _flat(eval_items: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str, str]]:
    return [(eid, str(iid), text) for eid, items in eval_items.items() for iid, text in items]


def _ngram_hits(texts: list[str], items: list[tuple[str, str, str]], n: int) -> dict[int, Overlap]:
    owner: dict[tuple[str, ...], int] = {}
    sizes: list[int] = []
    for k, (_, _, text) in enumerate(items):
        grams = ngrams(text, n)
        sizes.append(len(grams))
        for g in grams:
            owner.setdefault(g, k)
    out: dict[int, Overlap] = {}
    if not owner:
        return out
    for r, text in enumerate(texts):
        hit = Counter(owner[g] for g in ngrams(text, n) if g in owner)
        if hit:
            k, count = max(hit.items(), key=lambda kv: (kv[1] / sizes[kv[0]], -kv[0]))
            out[r] = Overlap(items[k][0], items[k][1], round(count / sizes[k], 4), "ngram")
    return out


def _weights(sets: list[set[str]]) -> dict[str, float]:
    df = Counter(w for s in sets for w in s)
    total = len(sets) + BACKGROUND
    return {w: math.log((1 + total) / d) ** 2 for w, d in df.items()}


def overlap_score(item: set[str], row: set[str], weight: dict[str, float]) -> float:
    """The weighted overlap of an item's content words with a row's (see the module's docstring)."""
    shared = item & row
    if len(shared) < MIN_SHARED and not (item and item == row):
        return 0.0
    found = sum(weight[w] for w in shared)
    return found / (sum(weight[w] for w in item) + sum(weight[w] for w in row - item) / 2)


def _near_hits(rows: list[dict[str, Any]], texts: list[str], items: list[tuple[str, str, str]],
               threshold: float) -> dict[int, Overlap]:
    from datasketch import MinHashLSH

    row_sets = [set(content_words(t)) for t in texts]
    q_sets = [set(content_words(question_of(r))) for r in rows]
    item_sets = [set(content_words(t)) for _, _, t in items]
    weight = _weights(row_sets + item_sets)
    live_items = [k for k, s in enumerate(item_sets) if s]
    if not live_items:
        return {}
    lsh = MinHashLSH(threshold=CANDIDATE_JACCARD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for k, mh in zip(live_items, minhashes(item_sets[k] for k in live_items)):
            session.insert(k, mh)
    probes = [(r, s) for r, s in enumerate(row_sets) if s] + [(r, s) for r, s in enumerate(q_sets) if s != row_sets[r] and s]
    out: dict[int, Overlap] = {}
    for (r, words), mh in zip(probes, minhashes(s for _, s in probes)):
        for k in sorted(lsh.query(mh)):
            score = overlap_score(item_sets[k], words, weight)
            if score >= threshold and (r not in out or score > out[r].score):
                out[r] = Overlap(items[k][0], items[k][1], round(score, 4), "near")
    return out


def overlaps(rows: list[dict[str, Any]], eval_items: dict[str, list[tuple[str, str]]], n: int = 13,
             threshold: float = NEAR_THRESHOLD) -> dict[int, Overlap]:
    """Row index -> its strongest overlap with an eval item (an n-gram hit first, else the best near one)."""
    items = _flat(eval_items)
    if not rows or not items:
        return {}
    texts = [row_text(r) for r in rows]
    near = _near_hits(rows, texts, items, threshold) if threshold <= 1.0 else {}
    return {**near, **_ngram_hits(texts, items, n)}


def contaminated(rows: list[dict[str, Any]], eval_items: dict[str, list[tuple[str, str]]], n: int = 13,
                 threshold: float = NEAR_THRESHOLD) -> dict[str, tuple[str, str, float]]:
    """Row id -> (eval step id, item id, score) for every row that overlaps an eval item: it shares an
    ``n``-gram with the item (score: the share of the item's n-grams found), or its weighted word overlap with
    the item reaches ``threshold`` (score: that overlap; above 1.0 turns the near test off). ``eval_items`` maps
    an eval step id (``"eval.ops"``) to ``[(item_id, text)]``, the text being the item's question (and answer).
    Rows without an ``id`` are keyed by their position (``"#3"``). The synth filters call it through
    ``overlaps``; tests/benchmarks/bench_synth.py measures its recall with tests/_paraphrase.py."""
    found = overlaps(rows, eval_items, n, threshold)
    return {_row_id(rows[r], r): (o.eval_id, o.item_id, o.score) for r, o in found.items()}


def _row_id(row: dict[str, Any], index: int) -> str:
    rid = row.get("id")
    return str(rid) if rid is not None else f"#{index}"
