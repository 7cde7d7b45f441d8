"""The ``route`` step: a lightweight classifier that sends each query to the domain system, another named target,
or the general one.

``classifier = tfidf`` is TF-IDF (word 1-2 grams, sublinear tf) + logistic regression; ``embedding`` is the packaged
all-MiniLM-L6-v2 sentence embeddings + logistic regression. Both train with scikit-learn but are saved as plain
JSON + ``.npz`` arrays and predicted with numpy (:class:`Router`): loading a router file never runs code.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from sdk import expr as E
from sdk.backends.base import Backend, CheckContext, GateFailed, StepContext, StepResult
from sdk.backends.routing.router import DOMAIN, GENERAL, TOKEN, Router, train, validate  # noqa: F401 - re-exported
from sdk.errors import DataError, DslError
from sdk.jsonl import read_jsonl
from sdk.spec import Endpoint, Problem
from sdk.spec.kinds import evaluates
from sdk.systems import applied_eval_items


def read_examples(path: Path, shown: str, known: Optional[set[str]] = None) -> list[tuple[str, str]]:
    """``(text, target)`` rows of a JSONL file; a bad row (or, given ``known``, an unknown target) raises a
    DataError at its line."""
    if not path.is_file():
        raise DslError(f"{shown}: no such file (route examples are relative to the recipe)")
    out = []
    for n, obj in read_jsonl(path, shown, objects=False):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("target"), str):
            raise DataError(shown, n, 'each row needs {"text": "...", "target": "..."}')
        if known is not None and obj["target"] not in known:
            raise DataError(shown, n, f"unknown target {obj['target']!r}; targets are {', '.join(sorted(known))} "
                                      "(name more with targets = { NAME = rag.X })")
        if obj["text"].strip():
            out.append((obj["text"], obj["target"]))
    return out


def known_targets(block: Any) -> set[str]:
    return {DOMAIN, GENERAL} | set(block.targets)


class RouteBackend(Backend):
    name = "sklearn"
    version = "1"
    kinds = ("route",)
    requires = ("sklearn", "numpy")
    install_hint = "pip install 'domain-dsl[serve]'"
    reads_secrets = False  # the router is trained on eval results; the general endpoint is called when served

    def check(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        if block.examples:
            path = ctx.spec.resolve_path(block.examples)
            if not path.is_file():
                return [Problem(path=ctx.path + ("examples",), message=f"{block.examples}: no such file",
                                hint="examples are relative to the recipe's folder")]
            # its rows are read at plan time by sdk.datachecks (read_examples), for every backend
        return []

    def run(self, ctx: StepContext) -> StepResult:
        import numpy as np

        block: Any = ctx.block
        rows: list[tuple[str, str]] = []
        if block.examples:
            rows += read_examples(ctx.spec.resolve_path(block.examples), block.examples, known_targets(block))
        for ref in block.eval_sets:
            _, items, _ = applied_eval_items(ctx.input(ref), ctx.spec.base_dir)
            rows += [(it.question, DOMAIN) for it in items]
        problem = example_problem(rows, block)  # the plan asks the same (sdk.datachecks_records)
        if problem is not None:
            raise DslError(f"{ctx.step_id}: {problem[0]}")
        rows, dropped = _unique(rows)
        labels = [t for _, t in rows]
        texts = [t for t, _ in rows]
        tr_i, ho_i = split_examples(labels, block.holdout, block.seed)
        tr_x, tr_y = [texts[i] for i in tr_i], [labels[i] for i in tr_i]
        ho_x, ho_y = [texts[i] for i in ho_i], [labels[i] for i in ho_i]
        meta, arrays, _ = train(tr_x, tr_y, block.classifier, block.seed, "sentence-transformers/all-MiniLM-L6-v2")
        targets = {DOMAIN: str(block.domain), **{k: str(v) for k, v in block.targets.items()}}
        if block.general is not None:
            targets[GENERAL] = f"endpoint:{block.general.model}" if isinstance(block.general, Endpoint) else str(block.general)
        else:  # documented default: without a general target, the domain system answers everything
            targets[GENERAL] = str(block.domain)
        meta["targets"] = targets
        meta["threshold"] = 0.5
        router = Router(meta, arrays)
        probs = router.predict_proba(ho_x)
        classes = meta["classes"]
        p_special = np.array([max((p for c, p in zip(classes, row) if c != GENERAL), default=1.0) for row in probs])
        if block.domain_share is not None:
            # the (1 - share) quantile of the held-out domain probabilities: that share of queries reaches it
            threshold = float(np.quantile(p_special, 1 - block.domain_share)) if len(p_special) else 0.5
            if block.domain_share == 0:
                threshold = float(np.nextafter(threshold, np.inf))
        elif block.threshold is not None:
            value = E.evaluate(block.threshold, lambda m: _metric(ctx, m))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise DslError(f"{ctx.step_id}: threshold = {E.to_text(block.threshold)} gives {value!r}; "
                               "it must be a probability between 0 and 1")
            threshold = float(value)
        else:
            threshold = 0.5
        meta["threshold"] = threshold
        router = Router(meta, arrays)
        routed = router.route_many(ho_x)
        qps = throughput(router, ho_x)
        preds = [r["target"] for r in routed]
        metrics = evaluate_routes(preds, ho_y, classes)
        metrics.update(threshold=round(threshold, 4), holdout=len(ho_y), train=len(tr_y), queries_per_second=round(qps, 1),
                       domain_share=round(sum(p != GENERAL for p in preds) / max(1, len(preds)), 4),
                       duplicates_dropped=dropped, domain_recall=_recall(preds, ho_y))
        # the split, explicit: which examples trained the router and which measured it (none in both)
        split = {"seed": block.seed, "holdout_share": block.holdout, "duplicates_dropped": dropped,
                 "train": [{"text": texts[i], "target": labels[i]} for i in sorted(tr_i)],
                 "holdout": [{"text": x, "target": y, "routed": p} for x, y, p in zip(ho_x, ho_y, preds)]}
        (ctx.out_dir / "split.json").write_text(json.dumps(split, indent=1, ensure_ascii=False))
        (ctx.out_dir / "router.json").write_text(json.dumps(meta))
        np.savez(ctx.out_dir / "router.npz", **arrays)
        curve = quality_cost_curve(ctx, block, p_special, targets, ho_y, threshold)
        outputs = {"router": "router.json", "arrays": "router.npz", "targets": targets, "classifier": block.classifier,
                   "split": "split.json"}
        if curve:
            outputs.update(quality_cost_curve="quality_cost.png", quality_cost_points="quality_cost.json")
            metrics.update(expected_quality=curve["expected_quality"], quality=curve["quality"])
        result = StepResult(metrics=metrics, outputs=outputs,
                            summary=f"{block.classifier} router: accuracy {metrics['accuracy']:.3f} on {len(ho_y)} "
                                    f"held-out examples it did not train on (trained on {len(tr_y)}), threshold "
                                    f"{threshold:.3f}, {qps:,.0f} queries/s")
        recall = metrics.get("domain_recall")
        if recall is not None and recall < block.min_domain_recall:  # a router that sends its domain away
            raise GateFailed(f"{ctx.step_id}: the router sends {1 - recall:.0%} of the domain's held-out examples "
                             f"away (domain recall {recall:.3f} < min_domain_recall {block.min_domain_recall}); "
                             "auto is not served. Give more examples of the domain's own questions, or lower the "
                             "threshold", result)
        return result


def example_problem(rows: list[tuple[str, str]], block: Any) -> Optional[tuple[str, Optional[str]]]:
    """``(message, hint)`` when the examples (``(text, target)``, repeats included) cannot train a router: fewer
    than two targets, or too few to train and hold out ``block.holdout`` of them; None when they can. The route
    step asks it before training, and the plan before any step runs."""
    rows, _ = _unique(rows)
    labels = [t for _, t in rows]
    if len(set(labels)) < 2:
        found = ", ".join(sorted(set(labels))) or "none"
        return (f"the router needs examples of at least two targets, found only {found}"
                + ("; eval set questions are all 'domain': add general examples with examples = \"FILE.jsonl\""
                   if block.eval_sets else ""),
                "add examples of the other targets (general: the questions the domain system should not answer) "
                "to examples = \"FILE.jsonl\"")
    n_hold = max(1, round(block.holdout * len(labels)))
    if len(labels) - n_hold < len(set(labels)) or len(labels) < 4:
        return (f"{len(labels)} examples are too few to train and hold out {n_hold} (give at least a few examples "
                "per target)", "a router learns from a few dozen examples per target at least")
    return None


def split_examples(labels: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held out)`` indices of the examples: stratified by target where every target has two examples and
    the held-out share has room for each, else a seeded random draw. A target the draw left out of training (one
    with a single example, say) then trades its held-out example for a training one of the most frequent target, so
    every target trains and the held-out count stays; :func:`example_problem` guarantees the room (at least as many
    training examples as targets), so this never fails after the plan passed."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    n_hold = max(1, round(holdout * len(labels)))
    stratify = labels if min(counts.values()) >= 2 and len(counts) <= n_hold <= len(labels) - len(counts) else None
    tr, ho = (list(x) for x in train_test_split(list(range(len(labels))), test_size=n_hold, random_state=seed,
                                                 stratify=stratify))
    for target in sorted(set(counts) - {labels[i] for i in tr}):
        trained = Counter(labels[i] for i in tr)
        largest = max(trained, key=lambda t: (trained[t], t))  # has two or more: more training examples than targets
        moved, back = next(i for i in ho if labels[i] == target), max(i for i in tr if labels[i] == largest)
        ho[ho.index(moved)], tr[tr.index(back)] = back, moved
    return tr, ho


def _unique(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """The examples without repeats (same text, case and spacing aside), so that no held-out example is also a
    training one; the first target of a repeated text wins. Returns the rows and how many were dropped."""
    seen: set[str] = set()
    out = []
    for text, target in rows:
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append((text, target))
    return out, len(rows) - len(out)


def _recall(preds: list[str], golds: list[str]) -> Optional[float]:
    """Share of the held-out examples of specialised targets (domain and named ones) routed to their own target."""
    pairs = [(p, g) for p, g in zip(preds, golds) if g != GENERAL]
    return round(sum(p == g for p, g in pairs) / len(pairs), 4) if pairs else None


def throughput(router: Router, texts: list[str], seconds: float = 0.5) -> float:
    """Queries per second routed one at a time (tfidf), or in batches of 64 (embedding)."""
    if not texts:
        return 0.0
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if router.kind == "tfidf":
            for t in texts[:200]:
                router.route(t)
            n += len(texts[:200])
        else:
            n += len(router.route_many(texts[:64]))
    return n / (time.perf_counter() - started)


def evaluate_routes(preds: list[str], golds: list[str], classes: list[str]) -> dict[str, Any]:
    labels = sorted(set(classes) | set(golds))
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for p, g in zip(preds, golds):
        confusion[g][p] = confusion[g].get(p, 0) + 1
    per_target = {}
    for t in labels:
        tp = confusion[t][t]
        predicted = sum(confusion[g][t] for g in labels)
        actual = sum(confusion[t].values())
        per_target[t] = {"precision": round(tp / predicted, 4) if predicted else 0.0,
                         "recall": round(tp / actual, 4) if actual else 0.0, "support": actual}
    acc = sum(p == g for p, g in zip(preds, golds)) / max(1, len(golds))
    return {"accuracy": round(acc, 4), "per_target": per_target, "confusion": confusion}


def _metric(ctx: StepContext, m: Any) -> float:
    for step_id, art in ctx.inputs.items():
        if evaluates(step_id) and isinstance(art.metrics.get(m.system), dict):
            value = (art.metrics[m.system].get(m.metric) or {}).get(m.bound)
            if isinstance(value, (int, float)):
                return float(value)
    raise DslError(f"{ctx.step_id}: threshold uses {m}, which no finished eval measured")


def quality_cost_curve(ctx: StepContext, block: Any, p_special: Any, targets: dict[str, str],
                       golds: Optional[list[str]] = None, threshold: float = 0.5) -> Optional[dict[str, Any]]:
    """Share of queries sent to the domain model against expected quality, when evals measured both targets.

    Quality comes from the evals (accuracy, else exact_match, else f1 of the domain system and of the general one on
    the expert questions). For every threshold, a held-out domain question routed to the domain system is expected
    to score the domain system's quality, one routed to general the general system's; the cost axis is the share
    of all held-out queries the domain system receives. Writes ``quality_cost.png`` and ``quality_cost.json``."""
    if GENERAL not in targets or not len(p_special):
        return None
    quality: dict[str, float] = {}
    for step_id, art in sorted(ctx.inputs.items()):
        if not evaluates(step_id):  # an input of a kind declared to evaluate systems (not a name prefix)
            continue
        for target in (DOMAIN, GENERAL):
            scores = art.metrics.get(targets[target])
            if not isinstance(scores, dict) or target in quality:
                continue
            for name in ("accuracy", "exact_match", "f1"):
                value = scores[name].get("value") if isinstance(scores.get(name), dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    quality[target] = float(value)
                    break
    if len(quality) < 2:
        return None
    import numpy as np

    p = np.asarray(p_special, dtype=float)
    is_domain = np.array([g != GENERAL for g in golds]) if golds is not None else np.ones(len(p), dtype=bool)
    if not is_domain.any():
        return None

    def point(t: float) -> tuple[float, float]:
        sent = p >= t
        recall = float(sent[is_domain].mean())
        return float(sent.mean()), recall * quality[DOMAIN] + (1 - recall) * quality[GENERAL]

    thresholds = sorted(set(np.linspace(0, 1, 101).round(4).tolist()) | {round(float(threshold), 4)})
    points = [(t, *point(t)) for t in thresholds]
    chosen = point(threshold)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([x for _, x, _ in points], [y for _, _, y in points], "o-", ms=2, label="router thresholds")
    ax.plot([chosen[0]], [chosen[1]], "r*", ms=12, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("share of queries sent to the domain model")
    ax.set_ylabel("expected quality on domain questions")
    ax.set_title(f"routing: quality vs cost ({targets[DOMAIN]} vs {targets[GENERAL]})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "quality_cost.png")
    plt.close(fig)
    data = {"quality": quality, "threshold": threshold, "share": round(chosen[0], 4),
            "expected_quality": round(chosen[1], 4),
            "points": [{"threshold": t, "share": round(x, 4), "expected_quality": round(y, 4)} for t, x, y in points]}
    (ctx.out_dir / "quality_cost.json").write_text(json.dumps(data, indent=1))
    return data


def route_query(folder: Path, query: str) -> dict[str, Any]:
    return Router.load(folder).route(query)
