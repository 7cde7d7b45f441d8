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


# ------------------------------------------- the numpy/scipy statistics against the earlier pure-Python loops


def _old_ci(values: list[float], resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    import random

    rng, n = random.Random(seed), len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int((1 - confidence) / 2 * resamples)], means[min(resamples - 1, int((1 + confidence) / 2 * resamples))]


def _old_paired_p(diff_of, n: int, resamples: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    import random

    observed = diff_of(range(n))
    if observed == 0:
        return 1.0
    rng, flipped = random.Random(seed), 0
    for _ in range(resamples):
        d = diff_of([rng.randrange(n) for _ in range(n)])
        flipped += (d <= 0 < observed) or (d >= 0 > observed)
    return min(1.0, 2 * (flipped + 1) / (resamples + 1))


@pytest.mark.parametrize("seed", [1, 2])
def test_numpy_statistics_match_the_pure_python_ones(seed: int) -> None:
    import random

    rng = random.Random(seed)
    a = [float(rng.random() < 0.55) for _ in range(300)]
    b = [float(rng.random() < 0.45) if rng.random() < 0.5 else x for x in a]
    f1 = [rng.betavariate(2, 5) for _ in range(300)]
    for values in (a, f1):
        old_lo, old_hi = _old_ci(values, 2000, 0.95, seed)
        width = old_hi - old_lo
        for method in ("percentile", "bca"):
            mean, lo, hi = M.bootstrap_ci(values, 2000, 0.95, seed + 100, method=method)
            assert mean == pytest.approx(sum(values) / len(values))
            # the same interval within Monte-Carlo error (a few % of its width; BCa moves it a little more)
            assert abs(lo - old_lo) < 0.1 * width and abs(hi - old_hi) < 0.1 * width, (method, lo, hi, old_lo, old_hi)
    diffs = [x - y for x, y in zip(a, b)]
    old_p = _old_paired_p(lambda idx: sum(diffs[i] for i in idx) / len(idx), len(diffs), 2000, seed)
    new_p = M.paired_bootstrap_p(a, b, 2000, seed + 100)
    assert abs(new_p - old_p) < max(0.02, 0.25 * old_p), (new_p, old_p)
    na = [(rng.uniform(5, 30), rng.randint(5, 20)) for _ in range(200)]
    nb = [(x * rng.uniform(0.85, 1.1), t) for x, t in na]

    def log_ppl_diff(idx):  # type: ignore[no-untyped-def]
        idx = list(idx)
        return (sum(na[i][0] for i in idx) / sum(na[i][1] for i in idx)
                - sum(nb[i][0] for i in idx) / sum(nb[i][1] for i in idx))

    old_pp = _old_paired_p(log_ppl_diff, len(na), 2000, seed)
    new_pp = M.paired_perplexity_p(na, nb, 2000, seed + 100)
    assert abs(new_pp - old_pp) < max(0.02, 0.25 * old_pp), (new_pp, old_pp)


def test_perplexity_and_macro_f1_intervals() -> None:
    nlls = [(10.0, 10), (20.0, 10), (15.0, 10), (30.0, 20)] * 10
    value, lo, hi = M.token_perplexity_ci(nlls, 500, 0.95, 0)
    assert value == pytest.approx(M.token_perplexity(nlls)) and lo < value < hi
    assert M.token_perplexity_ci([(10.0, 10)] * 5, 200) == pytest.approx((math.e, math.e, math.e))
    preds = ["yes", "no", "yes", "maybe", "no"] * 8
    golds = ["yes", "no", "no", "maybe", "no"] * 8
    value, lo, hi = M.macro_f1_ci(preds, golds, 500, 0.95, 0)
    assert value == pytest.approx(M.macro_f1(preds, golds)) and lo <= value <= hi < 1.0
    # the vectorised statistic is the per-resample macro-F1: with every item right, every resample scores 1
    assert M.macro_f1_ci(golds, golds, 200) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="bootstrap method"):
        M.bootstrap_ci([0.0, 1.0], 10, method="normal")


def test_statistics_of_a_large_set_are_reproducible() -> None:
    import random

    rng = random.Random(0)
    values = [float(rng.random() < 0.7) for _ in range(10_000)]
    first = M.bootstrap_ci(values, 1000, 0.95, 5)
    assert first == M.bootstrap_ci(values, 1000, 0.95, 5)
    assert first[1] < 0.7 < first[2] and first[2] - first[1] < 0.03  # about +-1.96 * sqrt(.21/10000) = 0.018
    other = [v if rng.random() < 0.97 else 1.0 - v for v in values]
    assert M.paired_bootstrap_p(values, other, 1000, 5) == M.paired_bootstrap_p(values, other, 1000, 5)


def test_a_gate_can_require_a_significant_difference() -> None:
    import sdk
    from sdk import expr as E
    from sdk.backends.eval.stats import evaluate_gate
    from sdk.errors import SpecError

    results = {"rag.t": {"exact_match": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}},
               "finetune.s": {"exact_match": {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4, "p_value": 0.002}}}
    gate = E.parse("rag.t.exact_match > finetune.s.exact_match and finetune.s.exact_match.p_value < 0.05")
    ok, detail = evaluate_gate(gate, results)
    assert ok and "finetune.s.exact_match.p_value = 0.0020" in detail
    results["finetune.s"]["exact_match"]["p_value"] = 0.2
    assert not evaluate_gate(gate, results)[0]

    def spec(g: str):  # type: ignore[no-untyped-def]
        return (sdk.Domain("d").base_model("b", id="x/y").rag("t", corpus="corpus.c").corpus("c", paths=["*.md"])
                .finetune("s", from_="base_model.b", data="dataset.q").dataset("q", path="q.jsonl")
                .eval("e", data="e.jsonl", systems=["rag.t", "finetune.s"], gate=g).build(check_files=False))

    spec("finetune.s.exact_match.p_value < 0.05")
    try:
        spec("rag.t.exact_match.p_value < 0.05")
    except SpecError as e:
        assert "rag.t is first" in str(e) and "list the system you compare against first" in str(e)
    else:
        raise AssertionError("a p-value of the first system must be refused")


def test_scipy_bootstrap_gives_the_figures_of_the_earlier_hand_written_bca() -> None:
    """sdk.metrics' intervals through scipy.stats.bootstrap: the figures the earlier closed-form BCa and order-
    statistics percentile code gave on the same data and seed (recorded before the change), within 2% of the width."""
    import random

    rng = random.Random(11)
    a = [float(rng.random() < 0.6) for _ in range(200)]
    f = [rng.betavariate(2, 5) for _ in range(150)]
    nl = [(rng.uniform(5, 30), rng.randint(5, 20)) for _ in range(120)]
    preds = [rng.choice(["yes", "no", "maybe"]) for _ in range(100)]
    golds = [p if rng.random() < 0.7 else rng.choice(["yes", "no", "maybe"]) for p in preds]
    earlier = {"bca": [(0.58, 0.51, 0.65), (0.30329, 0.28318, 0.32557), (3.99886, 3.49136, 4.63190),
                       (0.90898, 0.83770, 0.95847)],
               "percentile": [(0.58, 0.51, 0.65), (0.30329, 0.28213, 0.32475), (3.99886, 3.47993, 4.61474),
                              (0.90898, 0.84636, 0.96003)]}
    for method, rows in earlier.items():
        now = [M.bootstrap_ci(a, 4000, 0.95, 1, method=method), M.bootstrap_ci(f, 4000, 0.9, 1, method=method),
               M.token_perplexity_ci(nl, 4000, 0.95, 1, method=method),
               M.macro_f1_ci(preds, golds, 4000, 0.95, 1, method=method)]
        for (v, lo, hi), (ov, olo, ohi) in zip(now, rows):
            tol = 0.02 * (ohi - olo)
            assert v == pytest.approx(ov, abs=1e-4) and abs(lo - olo) < tol and abs(hi - ohi) < tol, \
                (method, (v, lo, hi), (ov, olo, ohi))
