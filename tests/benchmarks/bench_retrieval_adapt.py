"""Retrieval adapted to the domain (issue 27) on real TeleQnA (../shared/data/teleqna), through `dsl apply`.

Corpus: the explanations of the standards questions (Standards overview + Standards specifications), one document
per distinct explanation; each question's relevant chunk is its own explanation. Fixed document-level split:
a document is a test document when sha256("teleqna-test:" + name) falls in the first 20% (its questions are never
given to training), and the rest is split by the rag step's own rule (``adapt.dev_split = 0.25``, seed 0) into
train and dev. bm25, dense and hybrid are applied as written (before) and a hybrid rag with ``adapt = { ... }``
tunes the embedder on train and keeps it only if its dev gain's CI clears 0 (after: its hybrid, and dense with its
embedder). The before and after systems are each chosen by their dev recall@1; the test split reports recall@1/5,
MRR, the 95% CI of the per-question recall@1 gain (after - before), training time and query latency p50, and the
query latency p50 of the adapted hybrid with and without a reranker (side by side, as a ratio). Last line:
``adapt r1_before=<a> r1_after=<b> ci_low=<c> latency_ratio=<d> train_s=<e>``.

    .venv/bin/python tests/benchmarks/bench_retrieval_adapt.py [--epochs 1] [--reranker] [--quick]
`--quick`: 40 questions, torch embeddings (no ONNX export), batch 8: the code path only.
"""

from __future__ import annotations

import argparse
import hashlib
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
from _quick import QUICK, pick, skip_without  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "teleqna" / "TeleQnA.zip"
LAST = "adapt r1_before={} r1_after={} ci_low={} latency_ratio={} train_s={}"


def load() -> list[dict]:
    import pyzipper

    with pyzipper.AESZipFile(DATA) as z:
        z.setpassword(b"teleqnadataset")
        data = json.loads(z.read(z.namelist()[0]).decode("utf-8"))
    return [q for q in data.values() if q.get("category", "").startswith("Standards") and q.get("explanation")]


def is_test(doc: str) -> bool:
    return int(hashlib.sha256(f"teleqna-test:{doc}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < 0.2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--questions", type=int, default=pick(0, 40), help="first N standards questions (0: all)")
    parser.add_argument("--reranker", action="store_true", help="also train the cross-encoder reranker")
    args = parser.parse_args()
    if skip_without(DATA, LAST.format(*["nan"] * 5)):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    try:
        run(load()[: args.questions or None], work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(questions: list[dict], work: Path, args: argparse.Namespace) -> None:
    import sdk
    import sdk.workspace
    from dsl.parser import load as load_recipe
    from sdk import metrics as M
    from sdk.backends.rag.adapt_pairs import _bucket

    docs: dict[str, str] = {}
    for q in questions:
        docs.setdefault(q["explanation"].strip(), f"p{len(docs):04d}")
    (work / "docs").mkdir()
    for text, name in docs.items():
        (work / "docs" / f"{name}.txt").write_text(text)
    rows, test, dev = [], [], []
    for q in questions:
        name = docs[q["explanation"].strip()]
        item = (q["question"], name)
        if is_test(name):
            test.append(item)
            continue
        rows.append({"messages": [{"role": "user", "content": q["question"]},
                                  {"role": "assistant", "content": q["answer"]}], "sources": [f"{name}.txt"]})
        if _bucket(name, 0) < 0.25:
            dev.append(item)
    (work / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = "torch" if QUICK else "auto"
    batch = pick(32, 8)
    reranker = "  reranker = true" if args.reranker else ""
    (work / "r.dsl").write_text(f"""domain teleqna {{
  corpus specs {{ paths = ["docs/*.txt"]  split = {{ by = word, length = 1000, overlap = 0 }}  dedupe = none  min_chars = 1 }}
  dataset qa {{ path = "qa.jsonl"  format = chat }}
  rag bm25 {{ corpus = corpus.specs  retriever = bm25  top_k = 10 }}
  rag dense {{ corpus = corpus.specs  retriever = dense  top_k = 10  embedding_backend = {backend} }}
  rag hybrid {{ corpus = corpus.specs  retriever = hybrid  top_k = 10  embedding_backend = {backend} }}
  rag adapted {{ corpus = corpus.specs  retriever = hybrid  top_k = 10  embedding_backend = {backend}
                adapt = {{ pairs = dataset.qa  dev_split = 0.25  epochs = {args.epochs}  batch_size = {batch}{reranker} }} }}
}}
""")
    print(f"TeleQnA standards: {len(questions)} questions, {len(docs)} documents; test {len(test)} questions, "
          f"dev {len(dev)}, train {len(rows) - len(dev)}; load: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    result = sdk.apply(load_recipe(work / "r.dsl"))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(work / "r.dsl")
    record = ws.artifact("rag.adapted").outputs["adapt"]
    train_s = sum(p["training"]["seconds"] for p in record["parts"].values())
    print(f"adaptation: {json.dumps({k: record[k] for k in ('split', 'base', 'dev')})}")
    for name, part in record["parts"].items():
        print(f"  {name}: {part['reason']}; training {part['training']}")
    systems = {f"{label} before": ws.rag(label, with_generator=False) for label in ("bm25", "dense", "hybrid")}
    adapted = ws.rag("adapted", with_generator=False)
    systems["hybrid after"] = adapted
    dense_after = ws.rag("adapted", with_generator=False)
    from sdk.backends.rag.retrievers import query_pipeline

    dense_after.block = adapted.block.model_copy(update={"retriever": "dense"})
    dense_after.pipeline = query_pipeline(dense_after.block, adapted.pipeline.get_component("dense").document_store)
    systems["dense after"] = dense_after
    systems["bm25 after"] = systems["bm25 before"]

    def score(rag, items):
        out = {"r1": [], "r5": [], "mrr": [], "lat": []}
        for question, name in items:
            started = time.perf_counter()
            got = [Path(d["meta"]["source"]).stem for d in rag.retrieve(question, top_k=10)]
            out["lat"].append(time.perf_counter() - started)
            out["r1"].append(M.recall_at_k(got, [name], 1))
            out["r5"].append(M.recall_at_k(got, [name], 5))
            out["mrr"].append(M.reciprocal_rank(got, [name]))
        return out

    on_dev = {k: M.mean(score(s, dev)["r1"]) for k, s in systems.items()} if dev else {}
    on_test = {k: score(s, test) for k, s in systems.items()}
    for k, s in on_test.items():
        print(f"{k:>13}: test recall@1={M.mean(s['r1']):.3f} recall@5={M.mean(s['r5']):.3f} MRR={M.mean(s['mrr']):.3f}"
              f"  p50={statistics.median(s['lat']) * 1000:.1f} ms  (dev recall@1={on_dev.get(k, float('nan')):.3f})")
    print(rerank_latency(ws, adapted, test, score, query_pipeline))
    before = max((k for k in systems if k.endswith("before")), key=lambda k: on_dev.get(k, 0))
    after = max((k for k in systems if k.endswith("after")), key=lambda k: on_dev.get(k, 0))
    b, a = on_test[before], on_test[after]
    gain, low, high = M.bootstrap_ci([y - x for x, y in zip(b["r1"], a["r1"])], seed=0)
    ratio = statistics.median(a["lat"]) / statistics.median(b["lat"])
    print(f"chosen on dev: before = {before}, after = {after}; test recall@1 gain {gain:+.3f} [95% CI {low:+.3f}, "
          f"{high:+.3f}]; training {train_s:.0f} s")
    print(LAST.format(f"{M.mean(b['r1']):.3f}", f"{M.mean(a['r1']):.3f}", f"{low:.3f}", f"{ratio:.2f}",
                      f"{train_s:.1f}"))


def rerank_latency(ws, adapted, items, score, query_pipeline) -> str:
    """Query latency of the adapted hybrid with and without a reranker as its last stage, on the same questions: the
    kept trained reranker, else the base embedder's model loaded as a cross-encoder (same architecture as the one
    the rag step trains, untrained head: a latency figure only)."""
    from sdk.backends.rag.embedders import resolve_embedder

    store = adapted.pipeline.get_component("dense").document_store
    kept = bool(adapted.block.reranker)
    model = adapted.block.reranker or resolve_embedder(adapted.block.embedder)
    variants = {}
    for name, rr in (("without", None), ("with", model)):
        rag = ws.rag("adapted", with_generator=False)
        rag.block = adapted.block.model_copy(update={"reranker": rr})
        rag.pipeline = query_pipeline(rag.block, store, fusion=adapted.fusion)
        rag.retrieve("warm up", top_k=10)
        variants[name] = statistics.median(score(rag, items)["lat"])
    return (f"reranker latency (hybrid after, {len(items)} test questions, top 10 of "
            f"{'the kept trained reranker' if kept else 'the base model as an untrained cross-encoder'}): "
            f"p50 without {variants['without'] * 1000:.1f} ms, with {variants['with'] * 1000:.1f} ms, "
            f"ratio {variants['with'] / variants['without']:.2f}x")


if __name__ == "__main__":
    main()
