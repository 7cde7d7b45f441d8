"""Embedding throughput and recall of the indexing paths, on PubMedQA and TeleQnA (../shared/data).

Paths: ``before`` (the path before issue 17: Haystack's sentence-transformers embedder, corpus order, batches of 64),
``onnx`` (fp32 ONNX Runtime) and ``auto`` (the default, ``onnx-int8`` since issue 27: the fused graph with int8
weights), optionally ``torch`` (``--torch``: the PyTorch backend, longest first).

Corpora: PubMedQA, every CONTEXTS paragraph of the first ``--items`` PQA-L items (all 1,000: about 3.4k chunks),
each tagged with its PMID; TeleQnA, the explanations of the first ``--tele`` standards questions (all 3,000: 2,993
distinct explanations, about 20 words each). The paths are timed side by side on a shared machine: the corpus is cut
into slices of 256 chunks and every path embeds each slice in turn, the order rotating from slice to slice, so the
load of other processes falls on all paths alike. recall@5 is measured per path with the same PyTorch question
embeddings (the query pipeline embeds questions with PyTorch): each question ranks the chunks by cosine, chunks are
folded into their PMID (PubMedQA) or explanation (TeleQnA), and its own is the relevant one.
Per data set: chunks/s, the ratio to ``before``, recall@5 and the cosine to ``before``. Last line:
``embed ratio=<auto over before, the lower of the two data sets> recall5_delta=<auto minus fp32 onnx, the lower>``.

    .venv/bin/python tests/benchmarks/bench_embed.py [--items 1000] [--tele 3000] [--torch] [--quick]
`--quick`: 5 items and 20 questions (the one-off ONNX export is cached in ~/.cache/domain-dsl/onnx/ as usual).
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

DATA = ROOT.parent / "shared" / "data"
SLICE = 256


def pubmedqa(n: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """(chunk texts, each chunk's PMID, questions, each question's PMID)."""
    items = list(json.loads((DATA / "pubmedqa" / "ori_pqal.json").read_text()).items())[:n]
    return ([c for _, it in items for c in it["CONTEXTS"]], [p for p, it in items for _ in it["CONTEXTS"]],
            [it["QUESTION"] for _, it in items], [p for p, _ in items])


def teleqna(n: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """(distinct explanations, themselves as owners, questions, each question's explanation)."""
    import pyzipper

    with pyzipper.AESZipFile(DATA / "teleqna" / "TeleQnA.zip") as z:
        z.setpassword(os.environ.get("TELEQNA_PASSWORD", "teleqnadataset").encode())
        data = json.loads(z.read(z.namelist()[0]))
    items = [v for v in data.values() if v["category"].startswith("Standards")][:n]
    texts = list(dict.fromkeys(v["explanation"] for v in items))
    return texts, texts, [v["question"] for v in items], [v["explanation"] for v in items]


def before(docs: list, embedder: object) -> list:
    """The path before issue 17, verbatim: corpus order, Haystack's embedder (one slice of at most 256)."""
    return embedder.run(documents=docs)["documents"]  # type: ignore[attr-defined]


def onnx_path(model: object):
    """What ``embed_documents`` does for an ONNX backend (longest first, back in order), the session opened once
    rather than per slice (indexing opens it once per corpus)."""
    import dataclasses

    from sdk.backends.rag.embedders import _by_length

    def run(docs: list) -> list:
        order = _by_length([d.content for d in docs])
        vectors = model.embed([docs[i].content for i in order])  # type: ignore[attr-defined]
        out = list(docs)
        for i, v in zip(order, vectors):
            out[i] = dataclasses.replace(docs[i], embedding=v.tolist())
        return out

    return run


def recall_at_5(vectors, owners: list[str], queries, query_owners: list[str]) -> float:
    import numpy as np

    scores = queries @ vectors.T
    hits = 0
    for row, own in zip(scores, query_owners):
        ranked = list(dict.fromkeys(owners[j] for j in np.argsort(-row)[:40]))
        hits += own in ranked[:5]
    return hits / max(len(query_owners), 1)


def measure(name: str, corpus: tuple, paths: dict, st: object) -> dict[str, tuple[float, float]]:
    """Per path: (chunks/s, recall@5), the paths interleaved slice by slice."""
    import numpy as np
    from haystack import Document

    texts, owners, questions, question_owners = corpus
    docs = [Document(content=t) for t in texts]
    queries = st.encode(questions, normalize_embeddings=True, batch_size=64)  # type: ignore[attr-defined]
    seconds = dict.fromkeys(paths, 0.0)
    parts: dict[str, list] = {p: [] for p in paths}
    names = list(paths)
    for r, i in enumerate(range(0, len(docs), SLICE)):
        for p in names[r % len(names):] + names[:r % len(names)]:
            started = time.perf_counter()
            out = paths[p](docs[i:i + SLICE])
            seconds[p] += time.perf_counter() - started
            parts[p] += out
    result = {}
    ref = np.asarray([d.embedding for d in parts["before"]], dtype=np.float32)
    print(f"{name}: {len(texts)} chunks, {len(questions)} questions, load average {os.getloadavg()[0]:.1f}")
    for p in names:
        vectors = np.asarray([d.embedding for d in parts[p]], dtype=np.float32)
        speed = len(texts) / seconds[p]
        result[p] = (speed, recall_at_5(vectors, owners, queries, question_owners))
        cos = (vectors * ref).sum(axis=1)
        print(f"  {p:>7}: {speed:7.1f} chunks/s  ({seconds['before'] / seconds[p]:.2f}x)  "
              f"recall@5={result[p][1]:.4f}  cosine to before min {cos.min():.4f} mean {cos.mean():.4f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=pick(1000, 5))
    parser.add_argument("--tele", type=int, default=pick(3000, 20))
    parser.add_argument("--torch", action="store_true", help="also measure embedding_backend = torch")
    args = parser.parse_args()
    if skip_without(DATA / "pubmedqa" / "ori_pqal.json", "embed ratio=nan recall5_delta=nan"):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )
    from sentence_transformers import SentenceTransformer

    from sdk.backends.rag import embedders as E

    model = E.resolve_embedder(E.DEFAULT_EMBEDDER)
    auto = E.choose_backend("auto", model)
    fp32, int8 = E.OnnxEmbedder(model), E.OnnxEmbedder(model, quantize=True)  # the one-off exports are cached
    haystack = SentenceTransformersDocumentEmbedder(model=model, progress_bar=False, local_files_only=True,
                                                    normalize_embeddings=True, batch_size=64)
    haystack.warm_up()
    paths = {"before": lambda docs: before(docs, haystack),
             "onnx": onnx_path(fp32), "auto": onnx_path(int8 if auto == "onnx-int8" else fp32)}
    if args.torch:
        paths["torch"] = lambda docs: E.embed_documents(docs, E.DEFAULT_EMBEDDER, backend="torch")
    print(f"auto = {auto}; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    st = SentenceTransformer(model, device="cpu")
    results = {"PubMedQA": measure("PubMedQA", pubmedqa(args.items), paths, st)}
    if (DATA / "teleqna" / "TeleQnA.zip").exists():
        results["TeleQnA"] = measure("TeleQnA", teleqna(args.tele), paths, st)
    ratio = min(r["auto"][0] / r["before"][0] for r in results.values())
    delta = min(r["auto"][1] - r["onnx"][1] for r in results.values())
    print(f"embed ratio={ratio:.2f} recall5_delta={delta:+.4f}")


if __name__ == "__main__":
    main()
