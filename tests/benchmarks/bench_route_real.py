"""A three-domain router (telecom / medicine / law) on real questions from ../shared/data: TeleQnA, PubMedQA and
LegalBench hearsay. Trained on half of each domain's questions (stratified, seeded), evaluated on the rest, for
classifier = tfidf and classifier = embedding, through the route backend's own training and numpy inference.
Throughput is measured one query at a time on one core. Last line: `accuracy tfidf=<x> embedding=<y> qps=<z>`.
`--quick`: 30 questions a domain, throughput over 0.2 s.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick, skip_without  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PER_DOMAIN = pick(1000, 30)
SECONDS = pick(3.0, 0.2)


def questions() -> dict[str, list[str]]:
    import pyzipper

    with pyzipper.AESZipFile(DATA / "teleqna" / "TeleQnA.zip") as z:
        z.setpassword(b"teleqnadataset")
        tele = json.loads(z.read(z.namelist()[0]).decode("utf-8"))
    pubmed = json.loads((DATA / "pubmedqa" / "ori_pqal.json").read_text())
    law = []
    for name in ("train.tsv", "test.tsv"):
        with open(DATA / "legalbench-hearsay" / name, encoding="utf-8") as f:
            law += [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    rng = random.Random(0)
    tq = [v["question"] for v in tele.values()]
    rng.shuffle(tq)
    return {"telecom": tq[:PER_DOMAIN], "medicine": [v["QUESTION"] for v in pubmed.values()][:PER_DOMAIN],
            "law": law[:PER_DOMAIN]}


def main() -> None:
    if skip_without(DATA, "accuracy tfidf=nan embedding=nan qps=nan"):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sklearn.model_selection import train_test_split

    from sdk.backends.routing.route import Router, evaluate_routes, train

    qs = questions()
    texts = [t for d in qs for t in qs[d]]
    labels = [d for d in qs for _ in qs[d]]
    tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.5, random_state=0, stratify=labels)
    print(f"questions: {', '.join(f'{d} {len(v)}' for d, v in qs.items())}; train {len(tr_x)}, held out {len(te_x)}")
    acc, qps = {}, 0.0
    for classifier in ("tfidf", "embedding"):
        started = time.time()
        meta, arrays, _ = train(tr_x, tr_y, classifier, 0, "sentence-transformers/all-MiniLM-L6-v2")
        meta.update(targets={c: c for c in meta["classes"]}, threshold=0.0)
        router = Router(meta, arrays)
        trained = time.time() - started
        preds = [r["target"] for r in router.route_many(te_x)]
        result = evaluate_routes(preds, te_y, meta["classes"])
        acc[classifier] = result["accuracy"]
        per = ", ".join(f"{t} P={v['precision']:.3f} R={v['recall']:.3f}" for t, v in result["per_target"].items())
        print(f"{classifier:>9}: held-out accuracy {result['accuracy']:.4f} ({per}); trained in {trained:.1f}s")
        if classifier == "tfidf":
            import threadpoolctl

            with threadpoolctl.threadpool_limits(1):
                t0 = time.perf_counter()
                n = 0
                while time.perf_counter() - t0 < SECONDS:
                    for q in te_x[:500]:
                        router.route(q)
                    n += 500
                qps = n / (time.perf_counter() - t0)
            print(f"    tfidf routing one query at a time on one core: {qps:,.0f} queries/s")
    print(f"targets: accuracy >= 0.97 ({'met' if min(acc.values()) >= 0.97 else 'NOT met'}), "
          f">= 5,000 queries/s for tfidf ({'met' if qps >= 5000 else 'NOT met'})")
    print(f"accuracy tfidf={acc['tfidf']:.4f} embedding={acc['embedding']:.4f} qps={qps:.0f}")


if __name__ == "__main__":
    main()
