"""The eval metrics, one registry: each is one function plus its declaration (``@metric(name, aggregate=...)``).
EvalBlock.metrics, the plan-time checks of gates and the eval backend's scoring and aggregation derive from it;
reward tuning scores sampled answers with the same functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdk.metrics import (
    citation_precision,
    citation_recall,
    exact_match,
    normalize,
    recall_at_k,
    reciprocal_rank,
    token_f1,
)


@dataclass(frozen=True)
class Scored:
    """What a per-item metric sees of one answer to one item."""

    prediction: str
    answers: Sequence[str]  # the reference answer and its aliases
    gold: str
    task: str  # generate | multiple_choice | classification
    cited: Sequence[str]  # sources the answer cites (or the retrieved ones when it marks none)
    retrieved: Sequence[str]  # sources retrieval returned, best first (empty: no retrieval)
    expected: Sequence[str]  # the item's gold sources
    k: int  # retrieval depth of recall@k
    judged: float | None = None  # the judge's score, when the judge ran


@dataclass(frozen=True)
class MetricDef:
    """One eval metric: a per-item score (None: does not apply to this item or system), aggregated by the mean
    with a bootstrap interval; or a corpus-level statistic (``aggregate`` names it) computed over all items."""

    name: str
    score: Callable[[Scored], float | None] | None
    aggregate: str = "mean"  # mean | corpus (macro_f1 over predictions) | tokens (perplexity over NLLs)
    lower_is_better: bool = False
    doc: str = ""


METRICS: dict[str, MetricDef] = {}


def metric(name: str, *, aggregate: str = "mean", lower_is_better: bool = False) -> Callable[[Any], Any]:
    """Register a metric: ``@metric("f1") def _(s: Scored) -> float | None``. A name is registered once."""

    def wrap(fn: Any) -> Any:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = MetricDef(name, fn if aggregate == "mean" else None, aggregate, lower_is_better,
                                  (fn.__doc__ or "").strip())
        return fn

    return wrap


@metric("exact_match")
def _exact_match(s: Scored) -> float | None:
    """1 when the normalised answer equals the reference or an alias."""
    return exact_match(s.prediction, s.answers)


@metric("f1")
def _f1(s: Scored) -> float | None:
    """Token F1 against the best-matching reference."""
    return token_f1(s.prediction, s.answers)


@metric("accuracy")
def _accuracy(s: Scored) -> float | None:
    """The right option or label (generation: exact match)."""
    return float(normalize(s.prediction) == normalize(s.gold)) if s.task != "generate" \
        else exact_match(s.prediction, s.answers)


@metric("macro_f1", aggregate="corpus")
def _macro_f1(s: Scored) -> float | None:
    """F1 per label, averaged over labels (classification)."""
    return None


@metric("citation_precision")
def _citation_precision(s: Scored) -> float | None:
    """Share of cited sources that are gold sources."""
    return citation_precision(s.cited, s.expected) if s.retrieved and s.expected else None


@metric("citation_recall")
def _citation_recall(s: Scored) -> float | None:
    """Share of gold sources that are cited."""
    return citation_recall(s.cited, s.expected) if s.retrieved else None


@metric("recall_at_k")
def _recall_at_k(s: Scored) -> float | None:
    """Share of gold sources among the first k retrieved."""
    return recall_at_k(s.retrieved, s.expected, s.k) if s.retrieved else None


@metric("mrr")
def _mrr(s: Scored) -> float | None:
    """Reciprocal rank of the first gold source retrieved."""
    return reciprocal_rank(s.retrieved, s.expected) if s.retrieved else None


@metric("perplexity", aggregate="tokens", lower_is_better=True)
def _perplexity(s: Scored) -> float | None:
    """Token-weighted perplexity of the reference answer after the system's own prompt."""
    return None


@metric("judge")
def _judge(s: Scored) -> float | None:
    """An LLM judge's 1-5 score mapped to 0-1 (needs judge = endpoint { ... })."""
    return s.judged
