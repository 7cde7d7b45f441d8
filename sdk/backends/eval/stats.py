"""An eval's statistics: each metric's value with a bootstrap interval (by the metric's aggregate: mean, corpus
or token-weighted), each system against the first with a paired-bootstrap p-value, and the gate's verdict."""

from __future__ import annotations

from typing import Any

from sdk import expr as E
from sdk import metrics as M
from sdk import scoring as R


def aggregate(per_item: dict[str, list[dict[str, float | None]]], nlls: dict[str, dict[str, tuple[float, int]]],
              block: Any, rows: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Each system's value and interval per metric, by the metric's declared aggregate: the mean of per-item
    scores, the token-weighted perplexity of the reference answers, or a statistic over all predictions."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    stats = (block.bootstrap, block.confidence, block.seed)
    for sid, scores in per_item.items():
        out[sid] = {}
        for m in block.metrics:
            how = R.METRICS[m].aggregate
            if how == "mean":
                values = [s[m] for s in scores if s.get(m) is not None]
                if values:
                    v, lo, hi = M.bootstrap_ci(values, *stats)
                    out[sid][m] = {"value": v, "ci_low": lo, "ci_high": hi, "n": len(values)}
            elif how == "tokens" and nlls.get(sid):
                v, lo, hi = M.token_perplexity_ci(list(nlls[sid].values()), *stats)
                out[sid][m] = {"value": v, "ci_low": lo, "ci_high": hi, "n": len(nlls[sid])}
            elif how == "corpus" and rows and rows.get(sid):
                preds, golds = [r["prediction"] for r in rows[sid]], [r["gold"] for r in rows[sid]]
                v, lo, hi = M.macro_f1_ci(preds, golds, *stats)
                out[sid][m] = {"value": v, "ci_low": lo, "ci_high": hi, "n": len(preds)}
    return out


def compare(per_item: dict[str, list[dict[str, float | None]]], block: Any,
            nlls: dict[str, dict[str, tuple[float, int]]] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Each system against the first: mean difference and paired-bootstrap p-value per metric (for perplexity,
    the difference of the token-weighted perplexities over the items both systems scored)."""
    systems = list(per_item)
    if len(systems) < 2:
        return {}
    first = systems[0]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sid in systems[1:]:
        out[sid] = {}
        for m in block.metrics:
            pairs = [(a[m], b[m]) for a, b in zip(per_item[sid], per_item[first])
                     if a.get(m) is not None and b.get(m) is not None]
            if not pairs:
                continue
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            out[sid][m] = {"difference": M.mean(a) - M.mean(b),
                           "p_value": M.paired_bootstrap_p(a, b, block.bootstrap, block.seed)}
        if "perplexity" in block.metrics and nlls:
            both = [i for i in nlls.get(sid, {}) if i in nlls.get(first, {})]
            if both:
                a2, b2 = [nlls[sid][i] for i in both], [nlls[first][i] for i in both]
                out[sid]["perplexity"] = {"difference": M.token_perplexity(a2) - M.token_perplexity(b2),
                                          "p_value": M.paired_perplexity_p(a2, b2, block.bootstrap, block.seed)}
    return out


def evaluate_gate(gate: Any, results: dict[str, dict[str, dict[str, float]]]) -> tuple[bool, str]:
    missing: list[str] = []

    def lookup(m: E.Metric) -> float:
        try:
            return float(results[m.system][m.metric][m.bound])
        except KeyError:
            missing.append(str(m))
            return float("nan")

    ok = bool(E.evaluate(gate, lookup))
    if missing:
        return False, f"no value for {', '.join(missing)} (the metric does not apply to that system)"
    values = ", ".join(f"{m} = {lookup(m):.4f}" for m in E.metrics(gate))
    margin = E.margin(gate, lookup)
    detail = values + (f"; margin {margin:+.4f}" if margin is not None else "")
    return ok, detail
