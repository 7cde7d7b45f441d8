"""The metric functions of sdk.metrics: each small, pure, and checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk import metrics as M


def test_normalize_and_exact_match() -> None:
    assert M.normalize("  The INVITE, request! ") == "invite request"
    assert M.exact_match("the Invite.", ["INVITE"]) == 1.0
    assert M.exact_match("BYE", ["INVITE", "an invite"]) == 0.0
    assert M.exact_match("an invite", ["BYE", "Invite"]) == 1.0  # any alias counts


def test_token_f1() -> None:
    # pred tokens: invite request starts call; gold: invite starts; common 2 -> p=2/4, r=2/2 -> f1=2/3
    assert M.token_f1("INVITE request starts call", ["INVITE starts"]) == pytest.approx(2 / 3)
    assert M.token_f1("nothing here", ["INVITE"]) == 0.0
    assert M.token_f1("", [""]) == 1.0
    assert M.token_f1("BYE", ["INVITE", "BYE"]) == 1.0  # best alias


def test_accuracy_and_macro_f1() -> None:
    preds = ["yes", "yes", "no", "maybe", "yes"]
    golds = ["yes", "no", "no", "yes", "yes"]
    assert M.accuracy(preds, golds) == pytest.approx(3 / 5)
    # yes: tp=2 fp=1 fn=1 -> 2/3; no: tp=1 fp=0 fn=1 -> 2/3; (maybe is not a gold label)
    assert M.macro_f1(preds, golds) == pytest.approx(2 / 3)
    assert M.macro_f1(["a", "a", "a"], ["a", "a", "b"]) == pytest.approx((0.8 + 0.0) / 2)


def test_citations_and_retrieval() -> None:
    assert M.citation_precision(["a", "b"], ["a"]) == 0.5
    assert M.citation_precision([], ["a"]) is None
    assert M.citation_recall(["a"], ["a", "c"]) == 0.5
    assert M.citation_recall(["a"], []) is None
    assert M.recall_at_k(["x", "a", "b"], ["a", "b"], 2) == 0.5
    assert M.recall_at_k(["x", "a", "b"], ["a", "b"], 3) == 1.0
    assert M.reciprocal_rank(["x", "y", "a"], ["a"]) == pytest.approx(1 / 3)
    assert M.reciprocal_rank(["x"], ["a"]) == 0.0


def test_perplexity() -> None:
    assert M.perplexity(math.log(4) * 10, 10) == pytest.approx(4.0)
    assert M.perplexity(0.0, 0) == 1.0


@pytest.mark.parametrize("text,expected", [
    ("2", 1), ("Option 3", 2), ("(1) because", 0), ("B. the second", 1), ("The answer is RTP", 0),
    ("I do not know", None),
])
def test_parse_choice(text: str, expected: object) -> None:
    assert M.parse_choice(text, ["RTP", "SIP", "HSS"]) == expected


def test_ngrams() -> None:
    assert M.ngrams("The quick brown fox jumps", 3) == {("quick", "brown", "fox"), ("brown", "fox", "jumps")}
    assert M.ngrams("two words", 3) == set()


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean() -> None:
    values = [1.0] * 30 + [0.0] * 20
    a = M.bootstrap_ci(values, 500, 0.95, seed=7)
    b = M.bootstrap_ci(values, 500, 0.95, seed=7)
    assert a == b
    mean, lo, hi = a
    assert mean == pytest.approx(0.6)
    assert lo < mean < hi
    assert 0.4 < lo and hi < 0.8  # a normal approximation gives about [0.46, 0.74]
    assert M.bootstrap_ci([1.0] * 10, 200) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_p() -> None:
    better = [1.0] * 40 + [0.0] * 10
    worse = [0.0] * 40 + [1.0] * 10
    assert M.paired_bootstrap_p(better, worse, 1000, 0) < 0.01
    assert M.paired_bootstrap_p(better, better, 1000, 0) == 1.0
    # one item of difference in 50 is noise
    noisy = list(better)
    noisy[0] = 0.0
    assert M.paired_bootstrap_p(better, noisy, 1000, 0) > 0.2


def test_paired_perplexity_p() -> None:
    # (NLL, tokens) per item: a reads 0.5 nats/token better on 40 of 50 items, worse by 0.1 on 10
    a = [(10.0, 10)] * 40 + [(16.0, 10)] * 10
    b = [(15.0, 10)] * 40 + [(15.0, 10)] * 10
    assert M.paired_perplexity_p(a, b, 1000, 0) < 0.01
    assert M.paired_perplexity_p(a, a, 1000, 0) == 1.0
    # token weighting: one long item decides the perplexity, so resampling it away flips the sign often
    long_worse = [(1.0, 10)] * 5 + [(300.0, 100)]
    long_base = [(2.0, 10)] * 5 + [(280.0, 100)]
    assert M.perplexity(sum(x for x, _ in long_worse), 150) > M.perplexity(sum(x for x, _ in long_base), 150)
    assert M.paired_perplexity_p(long_worse, long_base, 1000, 0) > 0.2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=40), st.integers(0, 10))
def test_bootstrap_interval_contains_the_mean(values: list[float], seed: int) -> None:
    mean, lo, hi = M.bootstrap_ci(values, 200, 0.9, seed)
    assert 0.0 <= lo <= hi <= 1.0
    assert lo - 1e-9 <= mean <= hi + 1e-9 or len(set(values)) > 1  # percentile CIs may miss on tiny sets


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30), st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_f1_bounds_and_em_implies_f1(pred: str, golds: list[str]) -> None:
    f1 = M.token_f1(pred, golds)
    assert 0.0 <= f1 <= 1.0
    if M.exact_match(pred, golds) == 1.0:
        assert f1 == 1.0


def test_metrics_chart_gives_perplexity_its_own_panel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sdk.report import metrics_chart

    def cell(v: float, lo: float, hi: float) -> dict:
        return {"value": v, "ci_low": lo, "ci_high": hi, "n": 10}

    both = {"step": "eval.x", "n_items": 10, "metrics": {
        "a": {"f1": cell(0.2, 0.1, 0.3), "perplexity": cell(130.0, 120.0, 140.0)},
        "b": {"f1": cell(0.3, 0.2, 0.4), "perplexity": cell(120.0, 110.0, 130.0)}}}
    assert metrics_chart(tmp_path / "both.png", both)
    only = {"step": "eval.x", "n_items": 10, "metrics": {"a": {"perplexity": cell(130.0, 120.0, 140.0)}}}
    assert metrics_chart(tmp_path / "only.png", only)  # a perplexity-only eval still gets its chart
    assert not metrics_chart(tmp_path / "none.png", {"step": "eval.x", "n_items": 0, "metrics": {}})
    from PIL import Image

    # two panels make a wider figure than one
    assert Image.open(tmp_path / "both.png").size[0] > Image.open(tmp_path / "only.png").size[0]
