"""Evaluation throughput: the eval backend's own answering path (``SystemRunner`` over a local model, as
``dsl apply`` runs it) one item at a time against its batched path (``SystemRunner.answer_many``: prompts sorted by
length, left-padded, one ``generate`` call per batch; the (prompt, option) rows right-padded, one forward pass per
batch for log-likelihood scoring; ``LocalModel.generate_many`` / ``scored_many`` underneath), side by side on the
same model and items.

Model: a 4-layer Llama (hidden 256) with a BPE tokenizer trained on the questions (sdk.backends.training.common's
builder), its weights drawn wide (std 0.1) so that greedy answers differ from question to question (a freshly
initialised one answers everything with the same token, and identical answers would then prove nothing). Items:
PubMedQA questions (../shared/data/pubmedqa, or the tiny sample text's sentences when absent). Generation: greedy,
16 new tokens, so the answers must be identical (asserted). Scoring: the yes/no/maybe labels by log-likelihood
(classification), the same choice on every item (asserted) and the largest log-probability difference printed.

Last line: `eval ratio=<items/s batched over one at a time, generation and scoring together>`.
`--quick`: 4 items, batches of 2, 4 new tokens, a 1-layer model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
N_ITEMS, BATCH, NEW_TOKENS = int(os.environ.get("ITEMS", pick("32", "4"))), pick(16, 2), pick(16, 4)
LAYERS, HIDDEN = pick(4, 1), pick(256, 64)
LABELS = ["maybe", "no", "yes"]


def questions() -> list[str]:
    if DATA.exists():
        return [it["QUESTION"] for it in json.loads(DATA.read_text()).values()][:N_ITEMS]
    from sdk.backends.training.common import SAMPLE_TEXT

    return [s.strip() + "?" for s in SAMPLE_TEXT.split(". ") if s.strip()][:N_ITEMS]


def build_model(folder: Path, text: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from sdk.backends.training.common import make_tiny_model

    make_tiny_model(folder, text, layers=LAYERS, hidden=HIDDEN, heads=4, vocab=800, context=256)
    model = AutoModelForCausalLM.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(folder)
    return folder


def runner(folder: Path, task: str):  # type: ignore[no-untyped-def]
    """The eval backend's runner for a local ``base_model`` system, as the step builds it."""
    from sdk.artifacts import Artifact
    from sdk.backends.eval.answers import Prompter, SystemRunner
    from sdk.spec.values import Ref

    art = Artifact("base_model.m", folder, {"outputs": {"model": str(folder), "model_source": "local"}})
    return SystemRunner(None, Ref("base_model", "m"), {"base_model.m": art}, LABELS, task, Prompter(None))


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sdk.evalsets import EvalItem

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    qs = questions()
    items = [EvalItem(id=str(i), question=q, answers=[], label="yes") for i, q in enumerate(qs)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "m", " ".join(qs) * 2)
        gen, cls = runner(folder, "generate"), runner(folder, "classification")
        gen.local.model.eval()
        cls.local.model.eval()
    n = len(items)
    print(f"{n} items, batch {BATCH}, {NEW_TOKENS} new tokens, torch threads {torch.get_num_threads()}")

    one, t_gen_one = timed(lambda: [gen.answer(it, NEW_TOKENS, False) for it in items])
    many, t_gen_many = timed(lambda: gen.answer_many(items, NEW_TOKENS, False, BATCH))
    same = sum(a.prediction == b.prediction for a, b in zip(one, many))
    distinct = len({a.prediction for a in one})
    print(f"generate: one at a time {n / t_gen_one:6.1f} items/s, batched {n / t_gen_many:6.1f} items/s,"
          f" identical answers {same}/{n} ({distinct} distinct)")
    assert same == n, [(a.prediction, b.prediction) for a, b in zip(one, many) if a.prediction != b.prediction]

    s_one, t_sc_one = timed(lambda: [cls.answer(it, NEW_TOKENS, False) for it in items])
    s_many, t_sc_many = timed(lambda: cls.answer_many(items, NEW_TOKENS, False, BATCH))
    agree = sum(a.prediction == b.prediction for a, b in zip(s_one, s_many))
    prompts = [cls.prompter(it) for it in items]
    options = [[" " + label for label in LABELS]] * n
    worst = max(abs(x - y) for a, b in zip([cls.local.logliks(p, o) for p, o in zip(prompts, options)],
                                           cls.local.scored_many(prompts, options, BATCH)) for x, y in zip(a, b))
    print(f"score:    one at a time {n / t_sc_one:6.1f} items/s, batched {n / t_sc_many:6.1f} items/s,"
          f" same choice {agree}/{n}, max |logp diff| {worst:.2e}")
    assert agree == n
    print(f"eval ratio={(t_gen_one + t_sc_one) / (t_gen_many + t_sc_many):.1f}")


if __name__ == "__main__":
    main()
