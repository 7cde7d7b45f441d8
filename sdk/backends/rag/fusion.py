"""Learned fusion of keyword and dense retrieval: weights (and a reranker's cut-off) chosen on a dev split.

Pure functions over rankings, so they can be tested with synthetic data and reused by any step:

- :func:`fuse` joins one query's rankings (``{"bm25": [(doc_id, score), ...], "dense": [...]}``, best first) by
  the parameters ``params``:

  - ``{"method": "rrf", "k": 60, "weights": {"bm25": 0.3, "dense": 0.7}}``: weighted reciprocal-rank fusion,
    a document scoring ``sum_r w_r / (k + rank_r)`` (rank from 1; a list that misses it adds nothing). Equal
    weights and k = 60 are Haystack's ``DocumentJoiner(join_mode="reciprocal_rank_fusion")``.
  - ``{"method": "score", "norm": "minmax" | "zscore", "weights": {...}}``: weighted sum of each retriever's
    scores normalised per query and per retriever (min-max to [0, 1], a one-score list giving 1; or z-scores), a
    document missing from a list taking 0 (min-max) or the lower of -1 and the list's lowest z-score. BM25 scores
    are unbounded and cosines are not, so raw scores are never added.

  Weights are divided by their sum (as Haystack's joiner does), so ``{bm25: 1, dense: 3}`` is ``{0.25, 0.75}``.

  Ties keep the order of first appearance (the first retriever's list first), so fusion is deterministic.
- :func:`rerank` reorders the first ``cutoff`` fused documents by a cross-encoder's scores and keeps the rest after.
- :func:`learn_fusion` tries a small grid of such parameters (and cut-offs, when reranker scores are given) on a dev
  split, scores each by MRR, recall@1 and recall@5 against the gold ids, and returns the best with the figures of
  every candidate, so the choice can be recorded in a manifest and explained.

recall@k here is the share of queries with a gold document in the first k (hit rate), MRR the mean of 1 / the
rank of the first gold document (0 when none is retrieved).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sdk.errors import DslError

Ranking = list[tuple[str, float]]

BASELINE: dict[str, Any] = {"method": "rrf", "k": 60}  # Haystack's equal-weight reciprocal-rank fusion
RRF_KS = (10, 30, 60)
WEIGHT_STEP = 0.1
CUTOFFS = (5, 10, 20, 40)
NORMS = ("minmax",)


def _weights(params: dict[str, Any], names: Iterable[str]) -> dict[str, float]:
    names = list(names)
    weights = params.get("weights")
    if weights is None:
        return {n: 1.0 / len(names) for n in names} if names else {}
    unknown = sorted(set(names) - set(weights))
    if unknown:
        raise DslError(f"fusion weights name {sorted(weights)} but the rankings come from {names} "
                       f"(no weight for {', '.join(unknown)})")
    if any(not isinstance(w, (int, float)) or w < 0 or math.isnan(w) for w in weights.values()):
        raise DslError(f"fusion weights must be numbers >= 0, got {weights}")
    if not sum(weights[n] for n in names) > 0:
        raise DslError(f"fusion weights must not all be zero, got {weights}")
    total = sum(weights[n] for n in names)
    return {n: weights[n] / total for n in names}


def _normalise(ranking: Ranking, norm: str) -> dict[str, float]:
    scores = [s for _, s in ranking]
    if norm == "minmax":
        low, high = min(scores), max(scores)
        span = high - low
        return {d: (s - low) / span if span > 0 else 1.0 for d, s in ranking}
    if norm == "zscore":
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        return {d: (s - mean) / sd if sd > 0 else 0.0 for d, s in ranking}
    raise DslError(f"unknown fusion normalisation {norm!r} (known: minmax, zscore)")


def fuse(rankings: dict[str, Ranking], params: dict[str, Any] | None = None) -> Ranking:
    """One query's rankings joined into one, best first, as ``(doc_id, fused score)``; ``params`` as in the module
    docstring (None: :data:`BASELINE`). A retriever whose weight is 0 only adds its documents at the bottom."""
    params = params or BASELINE
    weights = _weights(params, rankings)
    method = params.get("method", "rrf")
    fused: dict[str, float] = {}
    if method == "rrf":
        k = params.get("k", 60)
        if not isinstance(k, (int, float)) or k < 0:
            raise DslError(f"fusion k must be a number >= 0, got {k!r}")
        for name, ranking in rankings.items():
            for rank, (doc, _) in enumerate(ranking, start=1):
                fused[doc] = fused.get(doc, 0.0) + weights[name] / (k + rank)
    elif method == "score":
        norm = params.get("norm", "minmax")
        normalised = {name: _normalise(r, norm) for name, r in rankings.items() if r}
        floors = {name: 0.0 if norm == "minmax" else min(-1.0, *v.values()) for name, v in normalised.items()}
        for doc in dict.fromkeys(d for r in rankings.values() for d, _ in r):
            fused[doc] = sum(weights[name] * v.get(doc, floors[name]) for name, v in normalised.items())
    else:
        raise DslError(f"unknown fusion method {method!r} (known: rrf, score)")
    order = {d: i for i, d in enumerate(dict.fromkeys(d for r in rankings.values() for d, _ in r))}
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))


def rerank(fused: Ranking, scores: dict[str, float], cutoff: int) -> Ranking:
    """The first ``cutoff`` documents of ``fused`` ordered by the reranker's ``scores`` (a document it did not score
    goes after those it did, in fused order), then the rest in fused order, each with the score that placed it."""
    head, tail = fused[:cutoff], fused[cutoff:]
    scored = sorted((d for d, _ in head if d in scores), key=lambda d: -scores[d])
    unscored = [(d, s) for d, s in head if d not in scores]
    return [(d, scores[d]) for d in scored] + unscored + tail


def figures(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]]) -> dict[str, Any]:
    """MRR, recall@1 and recall@5 of ranked id lists against gold id sets, and each query's reciprocal rank."""
    rr = []
    for ids, relevant in zip(ranked, gold, strict=True):
        rank = next((i for i, d in enumerate(ids, start=1) if d in relevant), None)
        rr.append(1.0 / rank if rank else 0.0)
    n = max(len(rr), 1)
    return {"mrr": sum(rr) / n, "recall@1": sum(r == 1.0 for r in rr) / n,
            "recall@5": sum(r >= 0.2 for r in rr) / n, "reciprocal_ranks": rr}


def weight_grid(names: Sequence[str], step: float = WEIGHT_STEP) -> list[dict[str, float]]:
    """Every weighting of ``names`` on a simplex grid of ``step`` (weights summing to 1, equal weights first)."""
    units = round(1 / step)
    if not math.isclose(units * step, 1.0):
        raise DslError(f"the weight step must divide 1, got {step}")
    grid = [dict(zip(names, (u / units for u in combo)))
            for combo in itertools.product(range(units + 1), repeat=len(names)) if sum(combo) == units]
    equal = {n: 1 / len(names) for n in names}
    return [equal] + [g for g in grid if not all(math.isclose(g[n], equal[n]) for n in names)]


def candidates(names: Sequence[str], rrf_ks: Iterable[int] = RRF_KS, norms: Iterable[str] = NORMS,
               step: float = WEIGHT_STEP) -> list[dict[str, Any]]:
    """The fusion parameters :func:`learn_fusion` tries, the baseline (equal-weight RRF, k = 60) first."""
    grid = weight_grid(names, step)
    out: list[dict[str, Any]] = [{"method": "rrf", "k": 60, "weights": grid[0]}]
    out += [{"method": "rrf", "k": k, "weights": w} for k in rrf_ks for w in grid
            if not (k == 60 and w is grid[0])]
    out += [{"method": "score", "norm": norm, "weights": w} for norm in norms for w in grid]
    return out


def learn_fusion(dev_rankings: dict[str, list[Ranking]], gold: list[set[str]], *,
                 rerank_scores: list[dict[str, float]] | None = None, objective: str = "mrr",
                 rrf_ks: Iterable[int] = RRF_KS, norms: Iterable[str] = NORMS, step: float = WEIGHT_STEP,
                 cutoffs: Iterable[int] = CUTOFFS) -> dict[str, Any]:
    """The fusion parameters that score best on a dev split, and the dev figures of every candidate.

    ``dev_rankings`` maps each retriever to one ranking per dev query (``[(doc_id, score), ...]``, best first);
    ``gold`` holds each query's relevant ids. With ``rerank_scores`` (per query, a cross-encoder's score of each
    candidate it scored) each candidate is also tried with every reranker cut-off in ``cutoffs`` (how many fused
    documents the reranker reorders), and the chosen parameters carry ``rerank_cutoff``. Candidates are ranked by
    ``objective`` (``mrr`` or ``recall@1``), then by the other of the two; on a tie the earlier candidate wins, so
    the baseline (Haystack's equal-weight RRF, k = 60) is kept unless something beats it on dev.

    Returns ``{"params", "objective", "dev": figures of the chosen, "baseline": figures of the baseline,
    "candidates": [{"params", "mrr", "recall@1", "recall@5"}, ...], "queries", "depth"}``; ``dev`` and
    ``baseline`` also hold each query's reciprocal rank (``reciprocal_ranks``), for a paired comparison."""
    names = list(dev_rankings)
    if not names:
        raise DslError("learn_fusion needs the rankings of at least one retriever")
    n = len(gold)
    for name, per_query in dev_rankings.items():
        if len(per_query) != n:
            raise DslError(f"{name} has rankings for {len(per_query)} dev queries, the gold ids are for {n}")
    if rerank_scores is not None and len(rerank_scores) != n:
        raise DslError(f"the reranker scored {len(rerank_scores)} dev queries, the gold ids are for {n}")
    if objective not in ("mrr", "recall@1"):
        raise DslError(f"unknown fusion objective {objective!r} (known: mrr, recall@1)")
    other = "recall@1" if objective == "mrr" else "mrr"
    cuts: list[int | None] = [None] if rerank_scores is None else sorted(set(cutoffs))
    tried: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for params in candidates(names, rrf_ks, norms, step):
        fused = [fuse({name: dev_rankings[name][q] for name in names}, params) for q in range(n)]
        for cut in cuts:
            chosen = params if cut is None else params | {"rerank_cutoff": cut}
            ranked = fused if cut is None or rerank_scores is None else [
                rerank(f, s, cut) for f, s in zip(fused, rerank_scores)]
            tried.append((chosen, figures([[d for d, _ in r] for r in ranked], gold)))
    best = max(range(len(tried)), key=lambda i: (tried[i][1][objective], tried[i][1][other], -i))
    depth = max((len(r) for per_query in dev_rankings.values() for r in per_query), default=0)
    return {"params": tried[best][0] | {"depth": depth}, "objective": objective, "queries": n, "depth": depth,
            "dev": tried[best][1], "baseline": tried[0][1],
            "candidates": [{"params": p} | {k: v for k, v in f.items() if k != "reciprocal_ranks"}
                           for p, f in tried]}
