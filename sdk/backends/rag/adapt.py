"""Retrieval adapted to the domain (``rag { adapt = { pairs = ... } }``), each part kept only where it wins.

The rag step calls :func:`adapt_retrieval` before it indexes: the pairs (:mod:`sdk.backends.rag.adapt_pairs`)
are split by source document into train and dev; the base system (the block as written) is measured on dev through
the real query pipeline; then each part is trained (:mod:`sdk.backends.rag.adapt_train`) and measured the
same way, and :func:`decide` keeps it only if the lower bound of the 95% paired-bootstrap interval of its per-query
gain (:func:`sdk.metrics.bootstrap_ci` over the differences) is above ``min_gain``. Parts are decided in order
(embedder, then reranker over the kept first stage); a rejected part's weights are deleted and its figures stay.

The artifact keeps ``adapted/embedder/`` and ``adapted/reranker/`` for the kept parts, ``adapted/adapt.json`` (the
manifest of the adaptation: pairs, split, training figures, dev figures, decisions), and the output ``adapt`` (the
same record, so ``dsl status`` can say what was kept and why). :func:`adapted_block` turns an applied block into
the one that answers: its embedder and reranker pointing into the artifact.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdk.backends.rag.adapt_pairs import Pair, load_pairs
from sdk.backends.rag.adapt_train import train_embedder, train_reranker
from sdk.backends.rag.corpus import as_documents
from sdk.backends.rag.embedders import choose_backend, embed_documents, resolve_embedder
from sdk.backends.rag.fusion import learn_fusion
from sdk.backends.rag.retrievers import query_pipeline, retriever, run_inputs
from sdk.errors import DslError
from sdk.metrics import bootstrap_ci
from sdk.spec.objects import Memory

FOLDER = "adapted"
DEPTH = 10  # chunks retrieved per dev question: recall@1, recall@5 and MRR over the first 10


@dataclass
class Adapted:
    block: Any  # the block that answers: embedder/reranker pointing at the kept parts
    docs: Optional[list[Any]]  # the chunks embedded by the kept embedder (None: the retriever needs no vectors)
    backend: Optional[str]  # the embedding backend that embedded them
    record: dict[str, Any]  # what was tried, measured and kept


def adapted_block(block: Any, art_path: Path, record: Optional[dict[str, Any]]) -> Any:
    """The applied block with its kept adapted parts (from the artifact at ``art_path``) in place."""
    if not record:
        return block
    update = {part: str(Path(art_path) / FOLDER / part) for part in ("embedder", "reranker")
              if (record.get("parts") or {}).get(part, {}).get("kept")}
    return block.model_copy(update=update) if update else block


def artifact_relative(block: Any, out_dir: Path) -> Any:
    """The block as ``pipeline.yaml`` names it: kept adapted parts inside the artifact become folders relative to
    it (``adapted/embedder``), like its store (``index``), so the exported pipeline loads from the artifact folder
    wherever the workdir is moved."""
    root = Path(out_dir).resolve()
    update = {}
    for part in ("embedder", "reranker"):
        name = getattr(block, part)
        if name and Path(name).is_absolute() and Path(name).resolve().is_relative_to(root):
            update[part] = Path(name).resolve().relative_to(root).as_posix()
    return block.model_copy(update=update) if update else block


def per_query(retrieved: list[list[str]], dev: list[Pair]) -> dict[str, list[float]]:
    """recall@1, recall@5 and reciprocal rank (of the first gold chunk, 0 beyond the depth) per dev question."""
    out: dict[str, list[float]] = {"recall_at_1": [], "recall_at_5": [], "mrr": []}
    for ids, pair in zip(retrieved, dev):
        gold = set(pair.gold)
        rank = next((i for i, c in enumerate(ids, 1) if c in gold), None)
        out["recall_at_1"].append(float(rank == 1))
        out["recall_at_5"].append(float(rank is not None and rank <= 5))
        out["mrr"].append(1.0 / rank if rank else 0.0)
    return out


def figures(scores: dict[str, list[float]]) -> dict[str, float]:
    return {k: round(statistics.fmean(v), 4) if v else float("nan") for k, v in scores.items()}


def matryoshka_figures(model_dir: Path, docs: list[Any], dev: list[Pair], dims: list[int]) -> dict[str, Any]:
    """Dev figures of dense retrieval by the tuned embedder at its full dimension and at each Matryoshka dimension
    (the chunks' vectors as indexed and the questions' embeddings truncated, then normalised): what a truncated
    index would cost. Reported only: the index keeps the full dimension."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    queries = np.asarray(model.encode([p.question for p in dev]), dtype=np.float32)
    vectors = np.asarray([d.embedding for d in docs], dtype=np.float32)
    ids = [d.id for d in docs]

    def unit(m: Any) -> Any:
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    out = {}
    for dim in dict.fromkeys([vectors.shape[1], *[d for d in dims if d <= vectors.shape[1]]]):
        order = np.argsort(-(unit(queries[:, :dim]) @ unit(vectors[:, :dim]).T), axis=1, kind="stable")[:, :DEPTH]
        out[str(dim)] = figures(per_query([[ids[j] for j in row] for row in order], dev))
    return out


def decide(base: list[float], new: list[float], min_gain: float, seed: int = 0,
           resamples: int = 1000) -> dict[str, Any]:
    """Keep a part when the lower bound of the 95% bootstrap interval of its mean per-query gain over the base (the
    same questions: a paired bootstrap) is above ``min_gain``; the figures and the reason either way."""
    gains = [b - a for a, b in zip(base, new)]
    gain, low, high = bootstrap_ci(gains, resamples=resamples, seed=seed) if len(gains) > 1 else (
        (gains[0],) * 3 if gains else (0.0, 0.0, 0.0))
    kept = bool(low > min_gain)
    why = (f"kept: the dev gain {gain:+.3f} has a 95% CI [{low:+.3f}, {high:+.3f}] above {min_gain:g}" if kept else
           f"rejected, the base is kept: the dev gain {gain:+.3f} has a 95% CI [{low:+.3f}, {high:+.3f}] whose lower "
           f"bound is not above {min_gain:g}")
    return {"kept": kept, "gain": round(gain, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "questions": len(gains), "reason": why}


class DevBench:
    """Measures a variant of the block on the dev questions through the real query pipeline, over an in-memory
    store of the chunks (embedded by the variant's embedder where its retriever needs vectors)."""

    def __init__(self, dev: list[Pair], base_dir: Path, log: Any) -> None:
        self.dev, self.base_dir, self.log = dev, base_dir, log
        self.latency: dict[str, float] = {}

    def embed(self, block: Any, docs: list[Any]) -> tuple[list[Any], str]:
        how = choose_backend(block.embedding_backend, resolve_embedder(block.embedder, self.base_dir), self.log)
        return embed_documents(docs, block.embedder, None, self.base_dir, backend=how), how

    def ranked(self, name: str, block: Any, docs: list[Any], depth: int = DEPTH,
               fusion: Optional[dict[str, Any]] = None) -> list[list[tuple[str, float]]]:
        """Each dev question's ranking (chunk id, score), best first, by the variant ``block``."""
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        block = block.model_copy(update={"store": Memory()})
        store = InMemoryDocumentStore()
        store.write_documents(docs)
        pipe = query_pipeline(block, store, top_k=depth, base_dir=self.base_dir, fusion=fusion)
        last = "ranker" if block.reranker else retriever(block.retriever, fusion).output
        out_lists, times = [], []
        for pair in self.dev:
            started = time.perf_counter()
            out = pipe.run(run_inputs(block, pair.question, depth, fusion), include_outputs_from={last})
            times.append(time.perf_counter() - started)
            out_lists.append([(d.id, float(d.score or 0.0)) for d in out.get(last, {}).get("documents", [])][:depth])
        self.latency[name] = round(statistics.median(times) * 1000, 2) if times else 0.0
        return out_lists

    def run(self, name: str, block: Any, docs: list[Any],
            fusion: Optional[dict[str, Any]] = None) -> dict[str, list[float]]:
        return per_query([[i for i, _ in r] for r in self.ranked(name, block, docs, DEPTH, fusion)], self.dev)


def adapt_retrieval(ctx: Any, block: Any, chunks: list[dict[str, Any]]) -> Adapted:
    """Train the parts ``block.adapt`` asks for, measure each on dev, keep the winners (see the module doc)."""
    adapt = block.adapt
    pairs, index = load_pairs(adapt, ctx.inputs, chunks, ctx.spec.base_dir)
    if not pairs.train or not pairs.dev:
        raise DslError(f"{ctx.step_id}: adapt.pairs = {adapt.pairs} gives {len(pairs.train)} training and "
                       f"{len(pairs.dev)} dev pairs; both need at least one (more source documents, or another "
                       "dev_split)")
    folder = ctx.out_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    trained_on = {p.source for p in pairs.train} - pairs.held_out  # negatives come from training documents only
    corpus = [c["content"] for c in chunks if index.source_of(c["id"]) in trained_on]
    base_model = resolve_embedder(block.embedder, ctx.spec.base_dir)
    vectors = retriever(block.retriever).needs_vectors
    bench = DevBench(pairs.dev, ctx.spec.base_dir, ctx.log)
    docs = as_documents(chunks)
    record: dict[str, Any] = {"pairs": str(adapt.pairs), "split": pairs.summary(), "metric": adapt.metric,
                              "min_gain": adapt.min_gain, "parts": {}}
    current, how = block, None
    current_docs = docs
    if vectors:
        current_docs, how = bench.embed(block, docs)
    scores = bench.run("base", current, current_docs)
    record["base"] = figures(scores)
    if adapt.embedder and vectors:
        ctx.log(f"{ctx.step_id}: tuning the embedder on {len(pairs.train)} pairs ({len(pairs.dev)} dev)")
        out = folder / "embedder"
        trained = train_embedder(base_model, pairs.train, index, corpus, adapt, out)
        tuned = block.model_copy(update={"embedder": str(out)})
        tuned_docs, tuned_how = bench.embed(tuned, docs)
        new = bench.run("embedder", tuned, tuned_docs)
        verdict = decide(scores[adapt.metric], new[adapt.metric], adapt.min_gain, adapt.seed)
        record["parts"]["embedder"] = {"base": block.embedder, "training": trained, "dev": figures(new),
                                       "matryoshka": list(adapt.matryoshka), **verdict}
        ctx.log(f"{ctx.step_id}: tuned embedder {verdict['reason']}")
        if adapt.matryoshka:
            record["parts"]["embedder"]["matryoshka_dev"] = matryoshka_figures(out, tuned_docs, pairs.dev,
                                                                               list(adapt.matryoshka))
        if verdict["kept"]:
            current, current_docs, how, scores = tuned, tuned_docs, tuned_how, new
        else:
            shutil.rmtree(out, ignore_errors=True)
    fusion = None
    if adapt.fusion and block.retriever == "hybrid":
        fusion, scores = _fusion(ctx, bench, current, current_docs, pairs.dev, adapt, scores, record)
    if adapt.reranker:
        from sentence_transformers import SentenceTransformer

        ctx.log(f"{ctx.step_id}: training a cross-encoder reranker on {len(pairs.train)} pairs")
        out = folder / "reranker"
        miner = SentenceTransformer(resolve_embedder(current.embedder, ctx.spec.base_dir), device="cpu",
                                    local_files_only=True)
        trained = train_reranker(base_model, miner, pairs.train, index, corpus, adapt, out)
        reranked = current.model_copy(update={"reranker": str(out)})
        new = bench.run("reranker", reranked, current_docs, fusion)
        verdict = decide(scores[adapt.metric], new[adapt.metric], adapt.min_gain, adapt.seed)
        record["parts"]["reranker"] = {"base": "none", "training": trained, "dev": figures(new), **verdict}
        ctx.log(f"{ctx.step_id}: trained reranker {verdict['reason']}")
        if verdict["kept"]:
            current, scores = reranked, new
        else:
            shutil.rmtree(out, ignore_errors=True)
    record["dev"] = figures(scores)
    record["latency_ms_p50"] = bench.latency
    (folder / "adapt.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Adapted(current, current_docs if vectors else None, how, record)


def _fusion(ctx: Any, bench: DevBench, block: Any, docs: list[Any], dev: list[Pair], adapt: Any,
            scores: dict[str, list[float]], record: dict[str, Any]) -> tuple[Optional[dict[str, Any]], Any]:
    """Learned fusion of bm25 and dense (:func:`sdk.backends.rag.fusion.learn_fusion`, chosen on dev), kept like the
    other parts; returns its parameters (None: Haystack's reciprocal-rank fusion stays) and the dev scores."""
    depth = 2 * DEPTH
    rankings = {name: bench.ranked(name, block.model_copy(update={"retriever": name}), docs, depth)
                for name in ("bm25", "dense")}
    learned = learn_fusion(rankings, [set(p.gold) for p in dev],
                           objective="recall@1" if adapt.metric == "recall_at_1" else "mrr")
    rr = list(learned["dev"]["reciprocal_ranks"])
    new = {"recall_at_1": [float(r >= 1.0) for r in rr], "recall_at_5": [float(r >= 0.2) for r in rr], "mrr": rr}
    verdict = decide(scores[adapt.metric], new[adapt.metric], adapt.min_gain, adapt.seed)
    record["parts"]["fusion"] = {"base": "reciprocal-rank fusion (k = 60, equal weights)", "params": learned["params"],
                                 "training": {"candidates": len(learned["candidates"]), "seconds": 0.0},
                                 "dev": figures(new), **verdict}
    ctx.log(f"{ctx.step_id}: learned fusion {learned['params']} {verdict['reason']}")
    return (learned["params"], new) if verdict["kept"] else (None, scores)


def fusion_of(record: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The kept learned-fusion parameters of an applied adaptation (None: plain reciprocal-rank fusion)."""
    part = ((record or {}).get("parts") or {}).get("fusion") or {}
    return part.get("params") if part.get("kept") else None


def summary(record: dict[str, Any]) -> str:
    """One line for the step's summary and ``dsl status``: each part kept or rejected, with its dev gain's CI."""
    parts = []
    for name, part in (record.get("parts") or {}).items():
        word = "kept" if part.get("kept") else "rejected"
        parts.append(f"{name} {word} ({record.get('metric')} gain {part.get('gain', 0):+.3f}, 95% CI "
                     f"[{part.get('ci_low', 0):+.3f}, {part.get('ci_high', 0):+.3f}])")
        if part.get("matryoshka_dev"):  # dev recall@5 at each dimension the embedder was trained at
            parts[-1] += " matryoshka recall@5 " + ", ".join(
                f"{dim}: {f.get('recall_at_5', 0):.3f}" for dim, f in part["matryoshka_dev"].items())
    return "adapted: " + ("; ".join(parts) if parts else "nothing trained")
