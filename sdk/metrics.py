"""Evaluation metrics: small pure functions, plus bootstrap confidence intervals and paired-bootstrap tests."""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

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


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean."""
    vals = list(values)
    if not vals:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(vals[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - confidence) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + confidence) / 2 * resamples))]
    return mean(vals), lo, hi


def _paired_p(statistic: Callable[[Sequence[int]], float], n: int, resamples: int, seed: int) -> float:
    """Two-sided paired-bootstrap p-value of ``statistic`` (a difference between two systems, computed over the
    items at the given indexes): how often a resample of the items puts it on the other side of zero from the
    observed value."""
    observed = statistic(range(n)) if n else 0.0
    if observed == 0:
        return 1.0
    rng = random.Random(seed)
    flipped = 0
    for _ in range(resamples):
        d = statistic([rng.randrange(n) for _ in range(n)])
        if (d <= 0 < observed) or (d >= 0 > observed):
            flipped += 1
    return min(1.0, 2 * (flipped + 1) / (resamples + 1))


def paired_bootstrap_p(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided p-value that systems a and b (scored on the same items) differ in mean score."""
    assert len(a) == len(b)
    diffs = [x - y for x, y in zip(a, b)]
    return _paired_p(lambda idx: sum(diffs[i] for i in idx) / len(idx), len(diffs), resamples, seed)


def token_perplexity(nlls: Sequence[tuple[float, int]]) -> float:
    """Token-weighted perplexity of items given as (NLL, tokens)."""
    return perplexity(sum(x for x, _ in nlls), sum(n for _, n in nlls))


def paired_perplexity_p(a: Sequence[tuple[float, int]], b: Sequence[tuple[float, int]], resamples: int = 1000,
                        seed: int = 0) -> float:
    """Two-sided p-value that two systems' token-weighted perplexities differ, from each item's (NLL, tokens)
    under system a and system b; items are resampled together, as in ``paired_bootstrap_p``."""
    assert len(a) == len(b)

    def log_ppl_diff(idx: Sequence[int]) -> float:  # the sign of the perplexity difference
        return (sum(a[i][0] for i in idx) / max(1, sum(a[i][1] for i in idx))
                - sum(b[i][0] for i in idx) / max(1, sum(b[i][1] for i in idx)))

    return _paired_p(log_ppl_diff, len(a), resamples, seed)
