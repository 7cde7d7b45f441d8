"""The router a route step trains and serving loads: plain JSON + ``.npz`` arrays, predicted with numpy (equal to
scikit-learn's ``predict_proba``), so loading a router file never runs code."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from sdk.backends.rag.embedders import resolve_embedder
from sdk.errors import DslError

TOKEN = re.compile(r"(?u)\b\w\w+\b")
GENERAL = "general"
DOMAIN = "domain"


def open_router(art: Any, **_: Any) -> "Router":
    """The route kind's opener (``opener`` of its declaration; see :func:`sdk.systems.open_system`)."""
    return Router.load(Path(art.path))


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
        """Read ``router.json`` + ``router.npz``. Plain JSON and numeric arrays only: ``allow_pickle=False`` means a
        router file can never run code; anything else is refused with a DslError."""
        import numpy as np

        folder = Path(folder)
        try:
            meta = json.loads((folder / "router.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DslError(f"{folder / 'router.json'}: cannot read the router: {e}") from None
        try:
            with np.load(folder / "router.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except ValueError as e:  # object arrays need pickle: refused
            raise DslError(f"{folder / 'router.npz'}: refused: {e} (a router holds numeric arrays only)") from None
        except (OSError, Exception) as e:  # noqa: BLE001 - not a zip, truncated, ...
            raise DslError(f"{folder / 'router.npz'}: cannot read the router arrays: {type(e).__name__}: {e}") from None
        validate(meta, arrays, folder)
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
            targets = self.meta["targets"]
            # without a general target (documented default) the domain system answers what is not routed elsewhere
            system = targets.get(target) or (targets.get(DOMAIN) if target == GENERAL else None) or target
            out.append({"target": target, "system": system, "probability": p.get(target, 0.0),
                        "probabilities": p})
        return out


def validate(meta: Any, arrays: dict[str, Any], where: Path) -> None:
    """The shapes and types a router must have (a hand-edited or foreign file gets a clear error)."""
    import numpy as np

    def bad(msg: str) -> DslError:
        return DslError(f"{where}: not a valid router: {msg}")

    if not isinstance(meta, dict) or meta.get("classifier") not in ("tfidf", "embedding"):
        raise bad("router.json needs classifier = tfidf | embedding")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise bad("classes must be a list of at least two names")
    if not isinstance(meta.get("targets", {}), dict) or not isinstance(meta.get("threshold"), (int, float)):
        raise bad("targets must be an object and threshold a number")
    for name in ("coef", "intercept") + (("idf",) if meta["classifier"] == "tfidf" else ()):
        a = arrays.get(name)
        if a is None or a.dtype.kind not in "fi":
            raise bad(f"array {name!r} is missing or not numeric")
    rows = 1 if len(classes) == 2 else len(classes)
    coef, intercept = arrays["coef"], arrays["intercept"]
    if coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,):
        raise bad(f"coef {coef.shape} / intercept {intercept.shape} do not fit {len(classes)} classes")
    if meta["classifier"] == "tfidf":
        vocab = meta.get("vocabulary")
        if not isinstance(vocab, dict) or arrays["idf"].shape != (coef.shape[1],):
            raise bad("vocabulary / idf do not fit the coefficients")
        if vocab and not all(isinstance(v, int) and 0 <= v < coef.shape[1] for v in vocab.values()):
            raise bad("vocabulary indices out of range")
    elif not isinstance(meta.get("embedder"), str):
        raise bad("an embedding router names its embedder")
    if not np.all(np.isfinite(coef)):
        raise bad("coefficients are not finite")


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
