"""Evaluation metrics: small pure functions, plus bootstrap confidence intervals and paired-bootstrap tests.

The statistics run on numpy (imported when first used): one matrix of resampled item indexes per metric, drawn in
blocks of about two million cells so a 10,000-item set stays small in memory; each statistic is a function of
per-item column sums, so the BCa jackknife is closed-form."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize(prediction)
    return float(any(pred == normalize(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    def one(pred: str, gold: str) -> float:
        p, g = normalize(pred).split(), normalize(gold).split()
        if not p or not g:
            return float(p == g)
        common = sum((Counter(p) & Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((one(prediction, a) for a in answers), default=0.0)


def accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float:
    return sum(normalize(p) == normalize(g) for p, g in zip(predictions, golds)) / max(1, len(golds))


def macro_f1(predictions: Sequence[str], golds: Sequence[str]) -> float:
    labels = sorted({normalize(g) for g in golds})
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(normalize(p) == label and normalize(g) == label for p, g in zip(predictions, golds))
        fp = sum(normalize(p) == label and normalize(g) != label for p, g in zip(predictions, golds))
        fn = sum(normalize(p) != label and normalize(g) == label for p, g in zip(predictions, golds))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def citation_precision(cited: Sequence[str], gold: Sequence[str]) -> float | None:
    """Share of the cited sources that support the answer (None when nothing was cited)."""
    if not cited:
        return None
    gold_set = set(gold)
    return sum(c in gold_set for c in cited) / len(cited)


def citation_recall(cited: Sequence[str], gold: Sequence[str]) -> float | None:
    """Share of the supporting sources that were cited (None when the item names no source)."""
    if not gold:
        return None
    cited_set = set(cited)
    return sum(g in cited_set for g in gold) / len(gold)


def recall_at_k(retrieved: Sequence[str], relevant: Sequence[str], k: int) -> float | None:
    if not relevant:
        return None
    top = set(retrieved[:k])
    return sum(r in top for r in set(relevant)) / len(set(relevant))


def reciprocal_rank(retrieved: Sequence[str], relevant: Sequence[str]) -> float | None:
    if not relevant:
        return None
    rel = set(relevant)
    for i, r in enumerate(retrieved, start=1):
        if r in rel:
            return 1.0 / i
    return 0.0


def perplexity(total_nll: float, n_tokens: int) -> float:
    return math.exp(min(total_nll / max(n_tokens, 1), 50.0))


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option an answer picks: a number ("2", "option 2", "(B)"), a letter, or the option's text."""
    t = text.strip()
    m = re.search(r"(?:option\s*)?\(?\b([1-9])\b\)?", t, re.IGNORECASE)
    if m and 1 <= int(m.group(1)) <= len(choices):
        return int(m.group(1)) - 1
    m = re.match(r"\(?([A-Za-z])[\).:\s]", t + " ")
    if m and ord(m.group(1).upper()) - 65 < len(choices):
        return ord(m.group(1).upper()) - 65
    norm = normalize(t)
    for i, c in enumerate(choices):
        if normalize(c) and normalize(c) in norm:
            return i
    return None


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


# ------------------------------------------------------------------------------------------- statistics

_CELLS = 2_000_000  # resampled item indexes held at once
METHODS = ("bca", "percentile")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _rows(n: int) -> int:
    return max(1, _CELLS // max(n, 1))


def _order_stats(dist: Any, confidence: float) -> tuple[float, float]:
    """The percentile interval as the earlier pure-Python code took it: order statistics of the sorted resamples."""
    import numpy as np

    s = np.sort(np.asarray(dist, dtype=float))
    r = len(s)
    return float(s[int((1 - confidence) / 2 * r)]), float(s[min(r - 1, int((1 + confidence) / 2 * r))])


def _resampled(features: Any, stat: Callable[[Any, Any], Any], resamples: int, seed: int) -> Any:
    """``stat(column sums, item count)`` over ``resamples`` resamples of the rows of ``features`` (items x k): one
    matrix of item indexes, drawn in blocks; every column of a row travels together (paired resampling)."""
    import numpy as np

    n = features.shape[0]
    rng, out, done = np.random.default_rng(seed), [], 0
    while done < resamples:
        rows = min(max(1, _CELLS // n), resamples - done)
        idx = rng.integers(0, n, size=(rows, n))
        if features.shape[1] == 1:
            sums = features[idx, 0].sum(axis=1)[:, None]
        else:  # times each item was drawn, times its features: one matrix product whatever the width
            counts = np.bincount((idx + (np.arange(rows) * n)[:, None]).ravel(), minlength=rows * n)
            sums = counts.reshape(rows, n).astype(float) @ features
        out.append(stat(sums, n))
        done += rows
    return np.concatenate(out)


def _interval(features: Any, stat: Callable[[Any, Any], Any], value: float, resamples: int, confidence: float,
              seed: int, method: str) -> tuple[float, float, float]:
    """(value, low, high) for a statistic of the column sums of ``features`` (items x k), by
    ``scipy.stats.bootstrap`` (items resampled with all their columns: ``paired``): BCa (Efron's bias correction
    and acceleration) or the percentile interval; the percentile interval of the same resamples where BCa is
    undefined (every resample equal, too few items)."""
    import warnings

    import numpy as np
    from scipy import stats

    if method not in METHODS:
        raise ValueError(f"bootstrap method must be one of {', '.join(METHODS)}, not {method!r}")
    n, k = features.shape
    if n < 2 or resamples < 1:
        return value, value, value

    def statistic(*columns: Any, axis: int = -1) -> Any:
        sums = np.stack([np.sum(c, axis=axis) for c in columns], axis=-1)
        return np.asarray(stat(sums.reshape(-1, k), columns[0].shape[axis])).reshape(sums.shape[:-1])

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a degenerate BCa interval is nan: the percentile one is taken below
        res = stats.bootstrap(tuple(features.T), statistic, n_resamples=resamples, confidence_level=confidence,
                              method="BCa" if method == "bca" else "percentile", paired=True, vectorized=True,
                              batch=max(1, _CELLS // (n * k)), rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = _order_stats(res.bootstrap_distribution, confidence)
    return value, lo, hi


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 method: str = "bca") -> tuple[float, float, float]:
    """(mean, low, high): bootstrap interval of the mean (BCa, or ``method="percentile"``)."""
    import numpy as np

    if not len(values):
        return float("nan"), float("nan"), float("nan")
    x = np.asarray(values, dtype=float)[:, None]
    return _interval(x, lambda sums, n: sums[:, 0] / n, mean(list(values)), resamples, confidence, seed, method)


def _flipped_p(features: Any, diff: Callable[[Any, Any], Any], resamples: int, seed: int, scale: float) -> float:
    """Two-sided paired-bootstrap p-value of ``diff`` (a difference between two systems, from the column sums of
    per-item ``features`` holding both systems' scores, so items are resampled together): how often a resample
    puts it on the other side of zero from the observed value. Within rounding of zero (relative to ``scale``)
    counts as zero."""
    n = features.shape[0]
    tol = 1e-12 * (1.0 + scale)
    observed = float(diff(features.sum(axis=0)[None, :], n)[0]) if n else 0.0
    if abs(observed) <= tol:
        return 1.0
    d = _resampled(features, diff, resamples, seed)
    flipped = int((d <= tol).sum() if observed > 0 else (d >= -tol).sum())
    return min(1.0, 2 * (flipped + 1) / (resamples + 1))


def paired_bootstrap_p(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided p-value that systems a and b (scored on the same items) differ in mean score."""
    import numpy as np

    assert len(a) == len(b)
    diffs = (np.asarray(a, dtype=float) - np.asarray(b, dtype=float))[:, None]
    scale = float(np.abs(diffs).max()) if len(diffs) else 0.0
    return _flipped_p(diffs, lambda sums, n: sums[:, 0] / n, resamples, seed, scale)


def token_perplexity(nlls: Sequence[tuple[float, int]]) -> float:
    """Token-weighted perplexity of items given as (NLL, tokens)."""
    return perplexity(sum(x for x, _ in nlls), sum(n for _, n in nlls))


def token_perplexity_ci(nlls: Sequence[tuple[float, int]], resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0, method: str = "bca") -> tuple[float, float, float]:
    """(perplexity, low, high): token-weighted perplexity with a bootstrap interval over items."""
    import numpy as np

    if not nlls:
        return float("nan"), float("nan"), float("nan")
    features = np.asarray(nlls, dtype=float).reshape(-1, 2)

    def ppl(sums: Any, n: int) -> Any:
        return np.exp(np.minimum(sums[:, 0] / np.maximum(sums[:, 1], 1.0), 50.0))

    return _interval(features, ppl, token_perplexity(nlls), resamples, confidence, seed, method)


def macro_f1_ci(predictions: Sequence[str], golds: Sequence[str], resamples: int = 1000, confidence: float = 0.95,
                seed: int = 0, method: str = "bca") -> tuple[float, float, float]:
    """(macro-F1, low, high): macro-F1 over the gold labels present in each resample, interval over items."""
    import numpy as np

    if not golds:
        return 0.0, 0.0, 0.0
    labels = sorted({normalize(g) for g in golds})
    code = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    features = np.zeros((len(golds), 3 * k))  # per item: one-hot true positive, predicted label, gold label
    for row, (p, g) in enumerate(zip(predictions, golds)):
        pi, gi = code.get(normalize(p)), code[normalize(g)]
        features[row, 2 * k + gi] = 1.0
        if pi is not None:
            features[row, k + pi] = 1.0
            features[row, gi] += float(pi == gi)

    def f1(sums: Any, n: int) -> Any:
        tp, pred, gold = sums[:, :k], sums[:, k:2 * k], sums[:, 2 * k:]
        per_label = np.where(tp > 0, 2 * tp / np.maximum(pred + gold, 1.0), 0.0)  # 2tp / (2tp + fp + fn)
        present = gold > 0
        return (per_label * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)

    return _interval(features, f1, macro_f1(predictions, golds), resamples, confidence, seed, method)


def paired_perplexity_p(a: Sequence[tuple[float, int]], b: Sequence[tuple[float, int]], resamples: int = 1000,
                        seed: int = 0) -> float:
    """Two-sided p-value that two systems' token-weighted perplexities differ, from each item's (NLL, tokens)
    under system a and system b; items are resampled together, as in ``paired_bootstrap_p``."""
    import numpy as np

    assert len(a) == len(b)
    if not a:
        return 1.0
    features = np.hstack([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])

    def log_ppl_diff(sums: Any, n: int) -> Any:  # the sign of the perplexity difference
        return sums[:, 0] / np.maximum(sums[:, 1], 1) - sums[:, 2] / np.maximum(sums[:, 3], 1)

    totals = features.sum(axis=0)
    scale = max(abs(totals[0]) / max(totals[1], 1.0), abs(totals[2]) / max(totals[3], 1.0))
    return _flipped_p(features, log_ppl_diff, resamples, seed, float(scale))
