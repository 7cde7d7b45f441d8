"""Retrieval at 10k and 100k chunks: the SDK's ``store = index {}`` (bm25s, exact numpy cosine search) against
Haystack's in-memory retrievers (``store = memory {}``), side by side in one run, through the code a recipe runs.

Corpus: every CONTEXTS paragraph of PubMedQA PQA-L (../shared/data/pubmedqa, about 3.4k real chunks), filled up to
10,000 and 100,000 chunks with generated distractors (sentences of 60-160 words drawn from the real corpus's word
frequencies, so document frequencies stay realistic). Queries: PubMedQA QUESTIONs.

Embeddings are random projections, not a neural model (embedding 100k chunks with all-MiniLM-L6-v2 takes over an
hour on 2 cores, and query time does not depend on what the vectors mean): each text's sublinear TF-IDF vector
over the corpus vocabulary times a fixed Gaussian matrix, 384 dimensions, unit length, the same for chunks and
questions. Both stores get the same vectors.

Ours is built and opened the way a rag step does it: ``stores.write_local`` writes the ``index/`` folder,
``stores.open_store`` reads it back from the files, and ``retrievers.query_pipeline`` builds the pipeline. BM25 is
timed through the whole Haystack pipeline (``pipeline.run`` with ``retrievers.run_inputs``) on both sides; dense
through the pipeline's ``dense`` component with the question's vector (the query embedder is left out: the
vectors are projections). The reference is the memory store exactly as ``write_local`` makes it (Haystack's
BM25L with its defaults, cosine similarity), which is exhaustive, so recall@10 is the share of its top-10 chunk
ids ours also returns. Also printed: whether the question's own abstract is in each side's top 10 (hit@10), and
the time to index.

Last line: `p50_ms bm25=<ours at 100k> dense=<ours at 100k> at=100000 speedup_bm25=<memory p50 / ours p50>`.
`QUERIES_10K` / `QUERIES_100K` (env) set how many questions are timed (defaults 100 / 25: the in-memory
retrievers take seconds per query at 100k on a small CPU). `--quick`: the first 50 items, 300 and 600 chunks, 5
queries each (the last line then says at=600).
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick, skip_without  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
DIM = 384
ITEMS, SMALL, LARGE = pick(1000, 50), pick(10_000, 300), pick(100_000, 600)


def build_corpus(items: dict, size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for pmid, item in items.items():
        for j, ctx in enumerate(item["CONTEXTS"]):
            ids.append(f"{pmid}#{j}")
            texts.append(ctx)
    counts = Counter(w for t in texts for w in t.split())
    words, weights = list(counts), list(counts.values())
    rng = random.Random(seed)
    i = 0
    while len(texts) < size:
        texts.append(" ".join(rng.choices(words, weights, k=rng.randint(60, 160))))
        ids.append(f"distractor#{i}")
        i += 1
    return ids[:size], texts[:size]


def projector(texts: list[str], tokenize: Any, seed: int = 0) -> Any:
    """A function texts -> unit float32 vectors: sublinear TF-IDF over the corpus vocabulary, randomly projected."""
    import numpy as np
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    docs = [Counter(tokenize(t)) for t in texts]
    for c in docs:
        for w in c:
            vocab.setdefault(w, len(vocab))
    df = np.zeros(len(vocab))
    for c in docs:
        df[[vocab[w] for w in c]] += 1
    idf = np.log(len(texts) / df).astype(np.float32) + 1.0
    proj = np.random.default_rng(seed).standard_normal((len(vocab), DIM)).astype(np.float32)

    def embed(batch: list[str]) -> Any:
        rows, cols, vals = [], [], []
        for i, t in enumerate(batch):
            for w, n in Counter(tokenize(t)).items():
                if w in vocab:
                    rows.append(i)
                    cols.append(vocab[w])
                    vals.append((1.0 + math.log(n)) * idf[vocab[w]])
        x = csr_matrix((vals, (rows, cols)), shape=(len(batch), len(vocab)), dtype=np.float32)
        e = np.asarray(x @ proj, dtype=np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    return embed


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def timed(fn: Any, queries: list[Any]) -> tuple[list[list[str]], list[float]]:
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        docs = fn(q)
        lat.append(time.perf_counter() - t)
        found.append([d.id for d in docs])
    return found, lat


def run(items: dict, size: int, n_queries: int) -> dict[str, float]:
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from sdk.artifacts import Artifact
    from sdk.backends.rag.index_store import Tokenizer, haystack_regex
    from sdk.backends.rag.retrievers import query_pipeline, run_inputs
    from sdk.backends.rag.stores import open_store, write_local
    from sdk.spec.blocks.rag import RagBlock

    ids, texts = build_corpus(items, size)
    questions = [(pmid, item["QUESTION"]) for pmid, item in list(items.items())[:n_queries]]
    embed = projector(texts, Tokenizer(haystack_regex()))
    vectors = embed(texts)
    qvecs = [[float(x) for x in v] for v in embed([q for _, q in questions])]
    docs = [Document(id=i, content=c, embedding=[float(x) for x in v]) for i, c, v in zip(ids, texts, vectors)]
    del vectors

    index_block = RagBlock(corpus="corpus.c", retriever="hybrid", top_k=10, store={"type": "index"})  # type: ignore[arg-type]
    memory_block = RagBlock(corpus="corpus.c", retriever="hybrid", top_k=10)  # type: ignore[arg-type]
    bm25 = {b: b.model_copy(update={"retriever": "bm25"}) for b in (index_block, memory_block)}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        memory = InMemoryDocumentStore(embedding_similarity_function="cosine")  # as stores.write_local makes it
        memory.write_documents(docs)
        t_mem = time.perf_counter() - t
        t = time.perf_counter()
        _, outputs = write_local(index_block, docs, Path(tmp))
        index = open_store(Artifact("rag.bench", Path(tmp), {"outputs": outputs}), index_block)
        t_idx = time.perf_counter() - t
        del docs
        lines = [f"{size:>7} chunks, {len(questions)} queries | index: memory {t_mem:.1f}s, "
                 f"index store {t_idx:.1f}s (write + read back)"]
        for kind in ("bm25", "dense"):
            results = {}
            for name, block, store in (("memory", memory_block, memory), ("index", index_block, index)):
                if kind == "bm25":
                    p = query_pipeline(bm25[block], store)
                    fn = lambda q, p=p, b=bm25[block]: p.run(run_inputs(b, q[1], 10))["bm25"]["documents"]  # noqa: E731
                    qs: list[Any] = questions
                else:
                    comp = query_pipeline(block, store).get_component("dense")
                    fn = lambda v, comp=comp: comp.run(query_embedding=v, top_k=10)["documents"]  # noqa: E731
                    qs = qvecs
                results[name] = timed(fn, qs)
            (exact, lat_m), (ours, lat_i) = results["memory"], results["index"]
            recall = statistics.mean(len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(exact, ours))
            hits = [statistics.mean(any(x.startswith(pmid + "#") for x in found) for (pmid, _), found
                                    in zip(questions, side)) for side in (exact, ours)]
            out[f"{kind}_memory"], out[f"{kind}_index"] = pct(lat_m, 0.5), pct(lat_i, 0.5)
            lines.append(f"  {kind:5} memory: p50 {pct(lat_m, 0.5):8.1f} ms  p95 {pct(lat_m, 0.95):8.1f} ms  "
                         f"hit@10 {hits[0]:.3f}")
            lines.append(f"  {kind:5} index : p50 {pct(lat_i, 0.5):8.2f} ms  p95 {pct(lat_i, 0.95):8.2f} ms  "
                         f"hit@10 {hits[1]:.3f}  recall@10 vs memory (exact) {recall:.3f}  "
                         f"speedup {pct(lat_m, 0.5) / pct(lat_i, 0.5):.0f}x")
        print("\n".join(lines), flush=True)
    return out


def main() -> None:
    if skip_without(DATA, f"p50_ms bm25=nan dense=nan at={LARGE} speedup_bm25=nan"):
        return
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    items = dict(list(json.loads(DATA.read_text()).items())[:ITEMS])
    run(items, SMALL, int(os.environ.get("QUERIES_10K", pick("100", "5"))))
    r = run(items, LARGE, int(os.environ.get("QUERIES_100K", pick("25", "5"))))
    print(f"p50_ms bm25={r['bm25_index']:.2f} dense={r['dense_index']:.2f} at={LARGE} "
          f"speedup_bm25={r['bm25_memory'] / r['bm25_index']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
