"""BM25 retrieval at 10k and 100k chunks: Haystack's InMemoryBM25Retriever (scores every document on every query,
in Python) against bm25s (a sparse-matrix BM25 index), side by side in one run.

Corpus: every CONTEXTS paragraph of PubMedQA PQA-L (../shared/data/pubmedqa, about 3.4k real chunks), filled up to
10,000 and 100,000 chunks with generated distractors (sentences of 60-160 words drawn from the real corpus's word
frequencies, so document frequencies stay realistic). Queries: PubMedQA QUESTIONs. Both sides use the same
tokenisation (Haystack's default, lower-cased `\\w\\w+`, each query term once, as Haystack scores it) and
k1=1.5, b=0.75; the in-memory BM25Okapi ranking is the exact reference: recall@10 is the share of its top-10 chunk
ids that bm25s also returns. bm25s scores every document too (no approximation); what differs is the idf:
Haystack's Okapi floors negative idf (terms in over half the chunks) at a quarter of the mean idf, bm25s'
`lucene` method uses log(1 + (N - df + 0.5) / (df + 0.5)), so frequent words weigh differently. Also printed:
whether the question's own abstract is in each side's top 10 (hit@10), and the time to index.

Last line: `p50_ms bm25=<bm25s p50 at 100k> at=100000 speedup_bm25=<in-memory p50 / bm25s p50>`.
`QUERIES_10K` / `QUERIES_100K` (env) set how many questions are timed (defaults 100 / 25: the in-memory
retriever takes seconds per query at 100k on a small CPU).
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
TOKEN = re.compile(r"(?u)\b\w\w+\b")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


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


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def run(items: dict, size: int, n_queries: int) -> tuple[float, float]:
    import bm25s
    from haystack import Document
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    ids, texts = build_corpus(items, size)
    queries = [(pmid, item["QUESTION"]) for pmid, item in list(items.items())[:n_queries]]

    t = time.perf_counter()
    store = InMemoryDocumentStore(bm25_algorithm="BM25Okapi", bm25_parameters={"k1": 1.5, "b": 0.75})
    store.write_documents([Document(id=i, content=c) for i, c in zip(ids, texts)])
    retriever = InMemoryBM25Retriever(document_store=store, top_k=10)
    t_hay_index = time.perf_counter() - t

    t = time.perf_counter()
    index = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    index.index([tokens(c) for c in texts], show_progress=False)
    t_bm_index = time.perf_counter() - t

    lat_hay, lat_bm, recall, hit_hay, hit_bm = [], [], [], [], []
    for pmid, q in queries:
        t = time.perf_counter()
        exact = [d.id for d in retriever.run(query=q)["documents"]]
        lat_hay.append(time.perf_counter() - t)
        t = time.perf_counter()
        found, _ = index.retrieve([list(dict.fromkeys(tokens(q)))], k=10, show_progress=False, n_threads=1)
        lat_bm.append(time.perf_counter() - t)
        ours = [ids[int(j)] for j in found[0]]
        recall.append(len(set(exact) & set(ours)) / max(1, len(exact)))
        hit_hay.append(any(x.startswith(pmid + "#") for x in exact))
        hit_bm.append(any(x.startswith(pmid + "#") for x in ours))
    hay50, bm50 = pct(lat_hay, 0.5), pct(lat_bm, 0.5)
    print(f"{size:>7} chunks, {len(queries)} queries | index: in-memory {t_hay_index:.1f}s, bm25s {t_bm_index:.1f}s")
    print(f"        in-memory BM25: p50 {hay50:8.1f} ms  p95 {pct(lat_hay, 0.95):8.1f} ms  hit@10 {statistics.mean(hit_hay):.3f}")
    print(f"        bm25s         : p50 {bm50:8.1f} ms  p95 {pct(lat_bm, 0.95):8.1f} ms  hit@10 {statistics.mean(hit_bm):.3f}"
          f"  recall@10 vs exact {statistics.mean(recall):.3f}")
    return hay50, bm50


def main() -> None:
    if not DATA.exists():
        print(f"SKIP: {DATA} is absent (the shared data folder sits beside the repository)")
        print("p50_ms bm25=nan at=100000 speedup_bm25=nan")
        return
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    items = json.loads(DATA.read_text())
    run(items, 10_000, int(os.environ.get("QUERIES_10K", "100")))
    hay50, bm50 = run(items, 100_000, int(os.environ.get("QUERIES_100K", "25")))
    print(f"p50_ms bm25={bm50:.2f} at=100000 speedup_bm25={hay50 / bm50:.1f}")


if __name__ == "__main__":
    sys.exit(main())
