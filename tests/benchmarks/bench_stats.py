"""Evaluation statistics on a 10,000-item report: the earlier pure-Python loops against sdk.metrics (numpy, and
``scipy.stats.bootstrap`` for the intervals), side by side in one run on the same synthetic per-item scores.

Per metric the report needs one bootstrap interval per system and one paired-bootstrap p-value per pair of
systems (1,000 resamples each, the `eval` block's default). Printed: seconds for each statistic, old and new, the
numbers both give (equal within Monte-Carlo error), and as the last line `stats ratio=<old seconds / new seconds>`
for one metric's interval plus p-value. `--quick`: 500 items, 100 resamples.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

N, RESAMPLES, CONFIDENCE, SEED = pick(10_000, 500), pick(1000, 100), 0.95, 0


def old_ci(values: list[float]) -> tuple[float, float, float]:
    rng, n = random.Random(SEED), len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(RESAMPLES))
    return (sum(values) / n, means[int((1 - CONFIDENCE) / 2 * RESAMPLES)],
            means[min(RESAMPLES - 1, int((1 + CONFIDENCE) / 2 * RESAMPLES))])


def old_paired_p(a: list[float], b: list[float]) -> float:
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    observed = sum(diffs) / n
    if observed == 0:
        return 1.0
    rng, flipped = random.Random(SEED), 0
    for _ in range(RESAMPLES):
        d = sum(diffs[rng.randrange(n)] for _ in range(n)) / n
        flipped += (d <= 0 < observed) or (d >= 0 > observed)
    return min(1.0, 2 * (flipped + 1) / (RESAMPLES + 1))


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    from sdk import metrics as M

    rng = random.Random(1)
    a = [float(rng.random() < 0.62) for _ in range(N)]           # accuracy-like, system a
    b = [x if rng.random() < 0.9 else 1.0 - x for x in a]         # system b: 10% of items flipped
    f1 = [rng.betavariate(2, 3) for _ in range(N)]                # F1-like, continuous
    nll_a = [(rng.uniform(20, 80), rng.randint(10, 40)) for _ in range(N)]
    nll_b = [(x * rng.uniform(0.9, 1.12), t) for x, t in nll_a]
    M.bootstrap_ci(a[:100], 10)  # import numpy/scipy outside the timings

    print(f"{N} items, {RESAMPLES} resamples, confidence {CONFIDENCE}")
    (o_ci, t_old_ci) = timed(old_ci, a)
    (o_p, t_old_p) = timed(old_paired_p, a, b)
    (n_ci, t_new_ci) = timed(M.bootstrap_ci, a, RESAMPLES, CONFIDENCE, SEED)
    (n_pc, t_new_pc) = timed(M.bootstrap_ci, a, RESAMPLES, CONFIDENCE, SEED, method="percentile")
    (n_p, t_new_p) = timed(M.paired_bootstrap_p, a, b, RESAMPLES, SEED)
    print(f"interval  old pure-Python {t_old_ci:7.3f}s  {o_ci[1]:.4f}..{o_ci[2]:.4f}")
    print(f"          numpy BCa       {t_new_ci:7.3f}s  {n_ci[1]:.4f}..{n_ci[2]:.4f}")
    print(f"          numpy percentile{t_new_pc:7.3f}s  {n_pc[1]:.4f}..{n_pc[2]:.4f}")
    print(f"paired p  old pure-Python {t_old_p:7.3f}s  p={o_p:.4f}")
    print(f"          numpy           {t_new_p:7.3f}s  p={n_p:.4f}")
    (f_ci, t_f) = timed(M.bootstrap_ci, f1, RESAMPLES, CONFIDENCE, SEED)
    print(f"continuous metric interval (BCa) {t_f:.3f}s  {f_ci[1]:.4f}..{f_ci[2]:.4f}")
    (p_ci, t_pci) = timed(M.token_perplexity_ci, nll_a, RESAMPLES, CONFIDENCE, SEED)
    (p_p, t_pp) = timed(M.paired_perplexity_p, nll_a, nll_b, RESAMPLES, SEED)
    print(f"perplexity interval (BCa) {t_pci:.3f}s  {p_ci[0]:.3f} in {p_ci[1]:.3f}..{p_ci[2]:.3f};"
          f" paired p {t_pp:.3f}s p={p_p:.4f}")
    labels = ["yes", "no", "maybe"]
    golds = [rng.choice(labels) for _ in range(N)]
    preds = [g if rng.random() < 0.6 else rng.choice(labels) for g in golds]
    (m_ci, t_m) = timed(M.macro_f1_ci, preds, golds, RESAMPLES, CONFIDENCE, SEED)
    print(f"macro-F1 interval (BCa) {t_m:.3f}s  {m_ci[0]:.4f} in {m_ci[1]:.4f}..{m_ci[2]:.4f}")
    old, new = t_old_ci + t_old_p, t_new_ci + t_new_p
    print(f"one metric (interval + paired p): old {old:.2f}s, new {new:.3f}s")
    print(f"stats ratio={old / new:.1f}")


if __name__ == "__main__":
    main()
