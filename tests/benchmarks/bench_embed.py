"""Embedding throughput: the indexing path before issue 17 (Haystack's sentence-transformers embedder, chunks in
corpus order, batches of 64) against the paths of ``embedding_backend``, on PubMedQA (../shared/data/pubmedqa).

Corpus: every CONTEXTS paragraph of the first ``--items`` PQA-L items (all 1,000 by default, about 3.4k chunks),
one chunk per paragraph, tagged with its PMID. Each path embeds the whole corpus (chunks/s); recall@5 is measured
per path with the same PyTorch query embeddings (the query pipeline embeds questions with PyTorch): each QUESTION
ranks the chunks by cosine, chunks are folded into PMIDs, and the item's own PMID is the relevant one.
Last line: ``embed ratio=<auto over before> recall5_delta=<auto minus before>``.

    .venv/bin/python tests/benchmarks/bench_embed.py [--items 1000] [--int8] [--quick]
`--quick`: the first 5 items (the one-off ONNX export is cached in ~/.cache/domain-dsl/onnx/ as usual).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick, skip_without  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"


def before(docs: list, model: str) -> list:
    """The path before issue 17, verbatim: corpus order, steps of 256, Haystack's embedder."""
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )

    emb = SentenceTransformersDocumentEmbedder(model=model, progress_bar=False, local_files_only=True,
                                               normalize_embeddings=True, batch_size=64)
    emb.warm_up()
    out: list = []
    for i in range(0, len(docs), 256):
        out += emb.run(documents=docs[i:i + 256])["documents"]
    return out


def recall_at_5(vectors, chunk_pmids: list[str], queries, query_pmids: list[str]) -> float:
    import numpy as np

    scores = queries @ vectors.T
    hits = 0
    for row, pmid in zip(scores, query_pmids):
        ranked = list(dict.fromkeys(chunk_pmids[j] for j in np.argsort(-row)[:20]))
        hits += pmid in ranked[:5]
    return hits / len(query_pmids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=pick(1000, 5))
    parser.add_argument("--int8", action="store_true", help="also measure embedding_backend = onnx-int8")
    args = parser.parse_args()
    if skip_without(DATA, "embed ratio=nan recall5_delta=nan"):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import torch
    from haystack import Document
    from sentence_transformers import SentenceTransformer

    from sdk.backends import embedders as E

    items = list(json.loads(DATA.read_text()).items())[: args.items]
    docs = [Document(content=c, meta={"pmid": pmid}) for pmid, item in items for c in item["CONTEXTS"]]
    chunk_pmids = [d.meta["pmid"] for d in docs]
    model = E.resolve_embedder(E.DEFAULT_EMBEDDER)
    E.OnnxEmbedder(model, quantize=args.int8)  # the one-off export (cached) is not indexing time
    queries = SentenceTransformer(model, device="cpu").encode([item["QUESTION"] for _, item in items],
                                                                normalize_embeddings=True)
    print(f"{len(items)} items -> {len(docs)} chunks; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    auto = E.choose_backend("auto", model)
    paths = {"before": lambda: before(docs, model),
             "torch": lambda: E.embed_documents(docs, E.DEFAULT_EMBEDDER, backend="torch"),
             "onnx": lambda: E.embed_documents(docs, E.DEFAULT_EMBEDDER, backend="onnx")}
    if args.int8:
        paths["onnx-int8"] = lambda: E.embed_documents(docs, E.DEFAULT_EMBEDDER, backend="onnx-int8")
    speed, recall = {}, {}
    for name, run in paths.items():
        started = time.perf_counter()
        out = run()
        speed[name] = len(docs) / (time.perf_counter() - started)
        vectors = np.asarray([d.embedding for d in out], dtype=np.float32)
        recall[name] = recall_at_5(vectors, chunk_pmids, queries, [pmid for pmid, _ in items])
        print(f"{name:>9}: {speed[name]:7.1f} chunks/s  ({speed[name] / speed['before']:.2f}x)  recall@5={recall[name]:.4f}")
    print(f"auto = {auto}")
    print(f"embed ratio={speed[auto] / speed['before']:.2f} recall5_delta={recall[auto] - recall['before']:+.4f}")


if __name__ == "__main__":
    main()
