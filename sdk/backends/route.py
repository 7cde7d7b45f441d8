"""The ``route`` step: a lightweight classifier that sends each query to the domain system, another named target,
or the general one.

``classifier = tfidf`` is TF-IDF (word 1-2 grams, sublinear tf) + logistic regression; ``embedding`` is the packaged
all-MiniLM-L6-v2 sentence embeddings + logistic regression. Both train with scikit-learn but are saved as plain
JSON + ``.npz`` arrays and predicted with numpy (:class:`Router`): loading a router file never runs code.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from sdk import expr as E
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.errors import DataError, DslError

TOKEN = re.compile(r"(?u)\b\w\w+\b")
GENERAL = "general"
DOMAIN = "domain"


def read_examples(path: Path, shown: str) -> list[tuple[str, str]]:
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(shown, n, f"malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("target"), str):
            raise DataError(shown, n, 'each row needs {"text": "...", "target": "..."}')
        if obj["text"].strip():
            out.append((obj["text"], obj["target"]))
    return out


class Router:
    """Numpy prediction of a saved router (no pickle, no scikit-learn needed)."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        self.coef = arrays["coef"]
        self.intercept = arrays["intercept"]
        self.kind = meta["classifier"]
        self.threshold = float(meta["threshold"])
        if self.kind == "tfidf":
            self.vocab: dict[str, int] = meta["vocabulary"]
            self.idf = arrays["idf"]
            self.ngram_max = int(meta.get("ngram_max", 2))
            self.coef_t = self.coef.T.copy()  # rows per term: a query costs a few lookups and one small product
        self._embedder: Any = None

    @classmethod
    def load(cls, folder: Path) -> "Router":
        import numpy as np

        meta = json.loads((folder / "router.json").read_text())
        with np.load(folder / "router.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(meta, arrays)

    def features(self, text: str) -> tuple[list[int], list[float]]:
        words = TOKEN.findall(text.lower())
        terms = list(words)
        if self.ngram_max >= 2:
            terms += [f"{a} {b}" for a, b in zip(words, words[1:])]
        counts = Counter(self.vocab[t] for t in terms if t in self.vocab)
        idx = list(counts)
        vals = [(1.0 + math.log(c)) * float(self.idf[i]) for i, c in zip(idx, counts.values())]
        norm = math.sqrt(sum(v * v for v in vals)) or 1.0
        return idx, [v / norm for v in vals]

    def decision(self, texts: list[str]) -> Any:
        import numpy as np

        if self.kind == "tfidf":
            rows = []
            for t in texts:
                idx, vals = self.features(t)
                if idx:
                    rows.append(np.asarray(vals) @ self.coef_t[idx])
                else:
                    rows.append(np.zeros(self.coef.shape[0]))
            scores = np.vstack(rows) + self.intercept
        else:
            scores = self.embed(texts) @ self.coef.T + self.intercept
        return scores

    def embed(self, texts: list[str]) -> Any:
        if self._embedder is None:
            from sentence_transformers import SentenceTransformer

            from sdk.backends.rag import resolve_embedder

            self._embedder = SentenceTransformer(resolve_embedder(self.meta["embedder"]), device="cpu")
        return self._embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    def predict_proba(self, texts: list[str]) -> Any:
        import numpy as np

        scores = self.decision(texts)
        if len(self.classes) == 2:
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def route(self, text: str) -> dict[str, Any]:
        return self.route_many([text])[0]

    def route_many(self, texts: list[str]) -> list[dict[str, Any]]:
        probs = self.predict_proba(texts)
        out = []
        for row in probs:
            p = {c: float(v) for c, v in zip(self.classes, row)}
            specialised = {c: v for c, v in p.items() if c != GENERAL}
            best = max(specialised, key=specialised.get) if specialised else GENERAL  # type: ignore[arg-type]
            target = best if specialised and specialised[best] >= self.threshold else GENERAL
            if GENERAL not in p and target == GENERAL:
                target = best
            out.append({"target": target, "system": self.meta["targets"].get(target), "probability": p.get(target, 0.0),
                        "probabilities": p})
        return out


def train(texts: list[str], labels: list[str], classifier: str, seed: int, embedder: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    meta: dict[str, Any] = {"classifier": classifier}
    if classifier == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=TOKEN.pattern)
        X = vec.fit_transform(texts)
        meta.update(vocabulary={k: int(v) for k, v in vec.vocabulary_.items()}, ngram_max=2)
        arrays = {"idf": vec.idf_.astype(np.float64)}
    else:
        from sdk.backends.rag import resolve_embedder
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_embedder(embedder), device="cpu")
        X = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
        meta["embedder"] = embedder
        arrays = {}
    clf = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    clf.fit(X, labels)
    meta["classes"] = [str(c) for c in clf.classes_]
    arrays.update(coef=clf.coef_.astype(np.float64), intercept=clf.intercept_.astype(np.float64))
    return meta, arrays, clf


class RouteBackend(Backend):
    name = "sklearn"
    version = "1"
    kinds = ("route",)
    requires = ("sklearn", "numpy")
    install_hint = "pip install 'domain-dsl[serve]'"

    def check(self, ctx: CheckContext) -> list:
        from sdk.spec import Problem

        block: Any = ctx.block
        if block.examples:
            path = ctx.spec.resolve_path(block.examples)
            if path.is_file():
                try:
                    rows = read_examples(path, block.examples)
                except DataError as e:
                    return [Problem(path=ctx.path + ("examples",), message=str(e))]
                known = {DOMAIN, GENERAL} | set(block.targets)
                unknown = sorted({t for _, t in rows} - known)
                if unknown:
                    return [Problem(path=ctx.path + ("examples",),
                                    message=f"{block.examples}: unknown target(s) {', '.join(unknown)}",
                                    hint=f"targets are {', '.join(sorted(known))} (name more with targets = {{ ... }})")]
        return []

    def run(self, ctx: StepContext) -> StepResult:
        import numpy as np

        block: Any = ctx.block
        rows: list[tuple[str, str]] = []
        if block.examples:
            rows += read_examples(ctx.spec.resolve_path(block.examples), block.examples)
        for ref in block.eval_sets:
            from sdk.evalsets import load_items

            ev = ctx.spec.eval[ref.label]
            rows += [(it.question, DOMAIN) for it in load_items(ctx.spec.resolve_path(ev.data), ev, ev.data)]
        labels = [t for _, t in rows]
        if len(set(labels)) < 2:
            raise DslError(f"{ctx.step_id}: the examples need at least two targets (found {sorted(set(labels))})")
        texts = [t for t, _ in rows]
        from sklearn.model_selection import train_test_split

        counts = Counter(labels)
        stratify = labels if min(counts.values()) >= 2 else None
        tr_x, ho_x, tr_y, ho_y = train_test_split(texts, labels, test_size=block.holdout, random_state=block.seed,
                                                  stratify=stratify)
        meta, arrays, clf = train(tr_x, tr_y, block.classifier, block.seed, "sentence-transformers/all-MiniLM-L6-v2")
        targets = {DOMAIN: str(block.domain), **{k: str(v) for k, v in block.targets.items()}}
        from sdk.spec import Endpoint

        if block.general is not None:
            targets[GENERAL] = f"endpoint:{block.general.model}" if isinstance(block.general, Endpoint) else str(block.general)
        meta["targets"] = targets
        meta["threshold"] = 0.5
        router = Router(meta, arrays)
        probs = router.predict_proba(ho_x)
        classes = meta["classes"]
        p_special = np.array([max((p for c, p in zip(classes, row) if c != GENERAL), default=1.0) for row in probs])
        if block.domain_share is not None:
            threshold = float(np.quantile(p_special, 1 - block.domain_share)) if len(p_special) else 0.5
        elif block.threshold is not None:
            threshold = float(E.evaluate(block.threshold, lambda m: _metric(ctx, m)))
        else:
            threshold = 0.5
        meta["threshold"] = threshold
        router = Router(meta, arrays)
        started = time.perf_counter()
        routed = router.route_many(ho_x)
        for text in ho_x * max(1, 2000 // max(1, len(ho_x))):
            router.route(text)
        reps = max(1, 2000 // max(1, len(ho_x))) * len(ho_x)
        qps = reps / max(time.perf_counter() - started, 1e-9)
        preds = [r["target"] for r in routed]
        metrics = evaluate_routes(preds, ho_y, classes)
        metrics.update(threshold=round(threshold, 4), holdout=len(ho_y), train=len(tr_y), queries_per_second=round(qps, 1),
                       domain_share=round(sum(p != GENERAL for p in preds) / max(1, len(preds)), 4))
        (ctx.out_dir / "router.json").write_text(json.dumps(meta))
        np.savez(ctx.out_dir / "router.npz", **arrays)
        curve = quality_cost_curve(ctx, block, p_special, targets)
        outputs = {"router": "router.json", "arrays": "router.npz", "targets": targets, "classifier": block.classifier}
        if curve:
            outputs["quality_cost_curve"] = curve
        return StepResult(metrics=metrics, outputs=outputs,
                          summary=f"{block.classifier} router: held-out accuracy {metrics['accuracy']:.3f}, "
                                  f"threshold {threshold:.3f}, {qps:,.0f} queries/s")


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
    for step_id, art in ctx.options.get("artifacts", {}).items():
        if step_id.startswith("eval.") and m.system in art.metrics:
            return float(art.metrics[m.system][m.metric][m.bound])
    raise DslError(f"{ctx.step_id}: threshold uses {m}, which no finished eval measured")


def quality_cost_curve(ctx: StepContext, block: Any, p_special: Any, targets: dict[str, str]) -> Optional[str]:
    """Share of queries sent to the domain model against expected quality, when evals measured both targets."""
    if GENERAL not in targets:
        return None
    quality: dict[str, float] = {}
    for step_id, art in ctx.options.get("artifacts", {}).items():
        if not step_id.startswith("eval."):
            continue
        for target in (DOMAIN, GENERAL):
            sid = targets[target]
            scores = art.metrics.get(sid, {})
            for name in ("accuracy", "exact_match", "f1"):
                if name in scores:
                    quality.setdefault(target, float(scores[name]["value"]))
                    break
    if len(quality) < 2 or not len(p_special):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    thresholds = np.linspace(0, 1, 51)
    shares = [(p_special >= t).mean() for t in thresholds]
    expected = [s * quality[DOMAIN] + (1 - s) * quality[GENERAL] for s in shares]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(shares, expected, "o-", ms=3)
    ax.set_xlabel("share of queries sent to the domain model")
    ax.set_ylabel("expected quality")
    ax.set_title("routing: quality vs cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "quality_cost.png")
    plt.close(fig)
    return "quality_cost.png"


def route_query(folder: Path, query: str) -> dict[str, Any]:
    return Router.load(folder).route(query)
