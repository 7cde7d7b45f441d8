"""Evaluation on real domain data, through field mappings only (no per-dataset code in the product):

- TeleQnA (telecom, multiple choice, AES-encrypted zip read with pyzipper): a subset, scored by option
  log-likelihood with a tiny model from tests/_tiny.py;
- LegalBench hearsay (law, Yes/No TSV): all 95 test rows, same tiny model, labels scored by log-likelihood;
- PubMedQA PQA-L (medicine, yes/no/maybe JSON): a tiny model is pretrained by the project (`pretrain` step from a
  llama architecture) on the 500 items outside the official test split, each written twice: with its abstract's
  conclusion as context and without context. It is then evaluated on items of the official test split two ways:
  the model alone (labels scored after ``Question: ...``) and a `rag` system whose BM25 index holds the abstracts
  (CONTEXTS + LONG_ANSWER, i.e. the whole published abstract incl. its conclusion) of all 1,000 items; the
  top retrieved chunk goes into the prompt before the labels are scored. The retrieved abstract is the item's own
  (the README's "question -> its own abstract" corpus), so this measures whether the system uses retrieved
  evidence, not open-domain retrieval difficulty.

Everything is written to a temporary folder (nothing copied into the repository). Prints the figures, the report
path of each set, elapsed times, and last `evaluated=<n> sets=3`.

    python tests/benchmarks/bench_eval_real.py [--items 150] [--steps 300] [--keep DIR]

Measured on the 2-core dev box while other jobs ran (so slow; the TeleQnA + hearsay part takes ~13 s):
  --steps 600, batch 16: TeleQnA accuracy 0.213 [0.147, 0.287] (chance ~0.23); hearsay accuracy 0.547, macro-F1
  0.354; PubMedQA model alone 0.467 vs rag 0.507 (+0.040, paired-bootstrap p=0.35: NOT significant), retrieval
  recall@1 0.967; 1100 s in all, 950 s of it pretraining.
  --steps 300, batch 8 (default): PubMedQA both systems 0.487 (the model always answers "yes"), +0.000, p=1.0;
  456 s in all.
So with a tiny model trained for minutes on a CPU the rag system does NOT reliably beat the model alone: the
model barely learns the task. The eval machinery (mapping, retrieval recall, CIs, paired test) works; the
win needs a model that can read the retrieved abstract.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT))

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "HAYSTACK_TELEMETRY_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

# str.splitlines() also breaks at these; the pretrain step's chunk reader uses it (reported), so keep them out
_ODD_BREAKS = str.maketrans({c: " " for c in "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"})


def clean(text: str) -> str:
    return text.translate(_ODD_BREAKS)


PROMPT = "{% if context %}Context: {{ context }} {% endif %}Question: {{ question }} Answer:"


def apply(recipe: Path) -> dict:
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "dsl.cli", "apply", str(recipe)], cwd=ROOT, capture_output=True, text=True, check=False)
    from sdk.state import StateStore

    steps = StateStore(recipe.parent / ".dsl").load().steps
    bad = {k: v.get("error") for k, v in steps.items() if v.get("status") not in ("done", "gate_failed")}
    if r.returncode != 0 and bad:
        sys.exit(f"apply {recipe} failed: {bad}\n{r.stderr[-3000:]}")
    print(f"  applied {recipe.name} in {time.time() - started:.1f}s")
    return steps


def show(steps: dict, step: str) -> int:
    st = steps[step]
    m = st["metrics"]
    print(f"  {step}: {m['n_items']} items, task {m['task']}")
    for sid, metrics in m.items():
        if isinstance(metrics, dict) and sid not in ("comparisons",):
            cells = ", ".join(f"{k} {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in metrics.items())
            print(f"    {sid}: {cells}")
    for sid, c in m.get("comparisons", {}).items():
        print("    " + sid + " vs first: " + ", ".join(f"{k} {v['difference']:+.3f} (p={v['p_value']:.3f})" for k, v in c.items()))
    print(f"    report: {Path(st['artifact']) / 'report.html'}")
    return int(m["n_items"])


def teleqna_and_hearsay(work: Path, items: int, model: Path) -> tuple[int, dict]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "r.dsl").write_text(f"""domain real {{
  base_model tiny {{ path = "{model}" }}
  eval teleqna {{
    data = "{(DATA / 'teleqna' / 'TeleQnA.zip').resolve()}"
    password = env("TELEQNA_PASSWORD")
    fields = {{ choices = "option *", answer_pattern = "option (\\\\d+)" }}
    metrics = [accuracy]
    systems = [base_model.tiny]
    limit = {items}
  }}
  eval hearsay {{
    data = "{(DATA / 'legalbench-hearsay' / 'test.tsv').resolve()}"
    fields = {{ question = "text", answer = "", label = "label" }}
    metrics = [accuracy, macro_f1]
    systems = [base_model.tiny]
  }}
}}
""")
    os.environ.setdefault("TELEQNA_PASSWORD", "teleqnadataset")
    steps = apply(work / "r.dsl")
    return show(steps, "eval.teleqna") + show(steps, "eval.hearsay"), steps


RAG_PROMPT = "{% for doc in documents %}Context: {{ doc.content }}\\n{% endfor %}Question: {{ question }}"


def pubmedqa(work: Path, items: int, steps_n: int) -> tuple[int, dict]:
    pq = json.loads((DATA / "pubmedqa" / "ori_pqal.json").read_text())
    test_ids = sorted(set(json.loads((DATA / "pubmedqa" / "test_ground_truth.json").read_text())) & set(pq))
    random.Random(0).shuffle(test_ids)
    evaluated = test_ids[:items]
    train = [k for k in pq if k not in set(evaluated)]  # every other item: never an evaluated one
    for d in ("train", "contexts"):
        (work / d).mkdir(parents=True)
    texts, sft = [], []
    for k in train:
        row = pq[k]
        q, ctx, conclusion = clean(row["QUESTION"]), clean(" ".join(row["CONTEXTS"])), clean(row["LONG_ANSWER"])
        texts.append(f"{ctx} {conclusion}")
        # retrieval-augmented fine-tuning: each item once with its abstract as the rag prompt renders it, once bare
        sft.append({"messages": [{"role": "user", "content": f"Context: {ctx}\nQuestion: {q}"},
                                 {"role": "assistant", "content": conclusion}]})
        sft.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": conclusion}]})
    random.Random(1).shuffle(sft)
    (work / "train" / "abstracts.txt").write_text("\n\n".join(texts) + "\n")
    (work / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    for k, row in pq.items():  # the retrieval corpus: the CONTEXTS of all 1,000 items, one document per PMID
        (work / "contexts" / f"{k}.txt").write_text(clean(" ".join(row["CONTEXTS"])) + "\n")
    (work / "eval.json").write_text(json.dumps({k: {**pq[k], "SOURCES": [k]} for k in evaluated}))
    (work / "r.dsl").write_text(f"""domain pubmed {{
  base_model tiny {{
    architecture = llama {{ layers = 2, hidden = 128, heads = 4, vocab = 4000, context = 1024 }}
  }}
  corpus train {{
    paths = ["train/*.txt"]
    split = {{ by = passage, length = 1, overlap = 0 }}
    dedupe = none
  }}
  corpus contexts {{
    paths = ["contexts/*.txt"]
    split = {{ by = word, length = 400, overlap = 0 }}
    dedupe = none
  }}
  dataset raft {{
    path = "sft.jsonl"
    format = chat
    validation_split = 0.05
  }}
  pretrain pm {{
    from = base_model.tiny
    corpus = corpus.train
    max_steps = {steps_n}
    batch_size = 8
    block_size = 256
    learning_rate = 0.002
    warmup_ratio = 0.05
    holdout = 0.02
    logging_steps = 20
    save_steps = 200
  }}
  finetune pm {{
    from = pretrain.pm
    data = dataset.raft
    method = full
    max_steps = {steps_n}
    batch_size = 8
    learning_rate = 0.001
    max_length = 768
    logging_steps = 20
    save_steps = 200
  }}
  rag pm {{
    corpus = corpus.contexts
    retriever = bm25
    top_k = 1
    generator = finetune.pm
    prompt = "{RAG_PROMPT}"
    max_new_tokens = 64
  }}
  eval conclusions {{
    data = "eval.json"
    format = json
    fields = {{ question = "QUESTION", answer = "LONG_ANSWER", sources = "SOURCES" }}
    metrics = [f1, recall_at_k]
    systems = [finetune.pm, rag.pm]
    max_new_tokens = 64
    contamination = true
  }}
  eval pubmedqa {{
    data = "eval.json"
    format = json
    fields = {{ question = "QUESTION", answer = "", label = "final_decision", sources = "SOURCES" }}
    prompt = "{PROMPT}"
    metrics = [accuracy, macro_f1]
    systems = [finetune.pm, rag.pm]
  }}
}}
""")
    steps = apply(work / "r.dsl")
    print(f"  pretrain: {steps['pretrain.pm']['summary']}")
    print(f"  finetune: {steps['finetune.pm']['summary']}")
    return show(steps, "eval.pubmedqa") + show(steps, "eval.conclusions"), steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=150, help="items per set (hearsay has 95)")
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps of the PubMedQA model")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: real data folder {DATA.resolve()} is absent")
        print("evaluated=0 sets=0")
        return
    from tests._tiny import make_tiny_model

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-eval-"))
    started = time.time()
    try:
        t = time.time()
        print("TeleQnA + LegalBench hearsay (tiny model from tests/_tiny.py):")
        model = make_tiny_model(work / "tiny-model")
        n1, _ = teleqna_and_hearsay(work / "tele-law", args.items, model)
        print(f"  elapsed {time.time() - t:.1f}s")
        t = time.time()
        print("PubMedQA: pretrained tiny model alone vs the same model with retrieval:")
        n2, steps = pubmedqa(work / "pubmedqa", args.items, args.steps)
        m = steps["eval.pubmedqa"]["metrics"]
        base, rag = m["pretrain.pm"]["accuracy"]["value"], m["rag.pm"]["accuracy"]["value"]
        p = m["comparisons"]["rag.pm"]["accuracy"]["p_value"]
        print(f"  rag beats the model alone: {rag > base} (accuracy {rag:.3f} vs {base:.3f}, paired-bootstrap p={p:.3f})")
        print(f"  elapsed {time.time() - t:.1f}s")
        print(f"total elapsed {time.time() - started:.1f}s")
        print(f"evaluated={n1 + n2} sets=3")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
