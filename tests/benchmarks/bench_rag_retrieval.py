"""Retrieval on real data: PubMedQA (../shared/data/pubmedqa), through `dsl apply` and RagSystem.

The corpus is the CONTEXTS of all 1,000 PQA-L items, one document per PMID, chunked as the recipe says; each
QUESTION is a query whose relevant document is its own PMID. Reports recall@1/5/10 and MRR (document level) for
bm25, dense and hybrid, indexing throughput, and query latency p50/p95. Last line:
`recall@5 bm25=<x> dense=<y> hybrid=<z>`.

Each system retrieves top_k = 10 chunks (about 1.5 chunks per abstract), ranked into documents by their best
chunk; recall@10 therefore counts the documents among those 10 chunks. `--quick`: the first 8 items.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick, skip_without  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
ITEMS = pick(1000, 8)

RECIPE = """domain pubmedqa {
  corpus abstracts { paths = ["docs/*.txt"]  split = { by = word, length = 200, overlap = 20 }  dedupe = exact }
  rag bm25 { corpus = corpus.abstracts  retriever = bm25  top_k = 10 }
  rag dense { corpus = corpus.abstracts  retriever = dense  top_k = 10 }
  rag hybrid { corpus = corpus.abstracts  retriever = hybrid  top_k = 10 }
}
"""


def main() -> None:
    if skip_without(DATA, "recall@5 bm25=nan dense=nan hybrid=nan"):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    items = dict(list(json.loads(DATA.read_text()).items())[:ITEMS])
    work = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    try:
        run(items, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(items: dict, work: Path) -> None:
    import sdk
    import sdk.workspace
    from dsl.parser import load
    from sdk import metrics as M
    from sdk.backends.rag.haystack import RagSystem

    (work / "docs").mkdir()
    for pmid, item in items.items():
        (work / "docs" / f"{pmid}.txt").write_text("\n\n".join(item["CONTEXTS"]))
    (work / "r.dsl").write_text(RECIPE)
    started = time.time()
    result = sdk.apply(load(work / "r.dsl"))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(work / "r.dsl")
    corpus = ws.artifact("corpus.abstracts").metrics
    print(f"corpus: {corpus['files']} documents -> {corpus['chunks']} chunks; apply took {time.time() - started:.1f}s")
    last = {}
    for label in ("bm25", "dense", "hybrid"):
        art = ws.artifact(f"rag.{label}")
        rag = ws.rag(label, with_generator=False)
        r1, r5, r10, mrr, lat = [], [], [], [], []
        for pmid, item in items.items():
            t = time.perf_counter()
            docs = rag.retrieve(item["QUESTION"])
            lat.append(time.perf_counter() - t)
            ranked = list(dict.fromkeys(Path(d["meta"]["source"]).stem for d in docs))
            r1.append(M.recall_at_k(ranked, [pmid], 1))
            r5.append(M.recall_at_k(ranked, [pmid], 5))
            r10.append(M.recall_at_k(ranked, [pmid], 10))
            mrr.append(M.reciprocal_rank(ranked, [pmid]))
        lat.sort()
        p50, p95 = statistics.median(lat), lat[int(0.95 * len(lat)) - 1]
        speed = art.metrics.get("chunks_per_second")
        print(f"{label:>6}: recall@1={M.mean(r1):.3f} recall@5={M.mean(r5):.3f} recall@10={M.mean(r10):.3f} "
              f"MRR={M.mean(mrr):.3f}  index {speed} chunks/s  query p50={p50 * 1000:.1f} ms p95={p95 * 1000:.1f} ms")
        last[label] = M.mean(r5)
    chance = 5 / len(items)
    print(f"chance recall@5 = {chance:.3f}; hybrid >= max(bm25, dense): {last['hybrid'] >= max(last['bm25'], last['dense'])}")
    print(f"recall@5 bm25={last['bm25']:.3f} dense={last['dense']:.3f} hybrid={last['hybrid']:.3f}")


if __name__ == "__main__":
    main()
