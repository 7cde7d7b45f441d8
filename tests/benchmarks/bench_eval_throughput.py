"""Evaluation throughput: answering items one at a time (what the eval backend does today, through its real
``LocalModel``) against batched answering (items sorted by prompt length, left-padded, one ``generate`` call and
one forward pass for log-likelihood scoring per batch), side by side on the same model and items.

This is the measurement behind the proposal for ``sdk/backends/evaluate.py`` (``LocalModel.generate_many`` and
``LocalModel.scored_many``, not wired in yet): the batched path is written here in a few lines so its answers can be
checked against the backend's own one-at-a-time path. Model: a randomly initialised 4-layer Llama (hidden 256)
with a BPE tokenizer trained on the questions (tests/_tiny.py's builder); items: PubMedQA questions
(../shared/data/pubmedqa, or the tiny sample text's sentences when absent). Greedy decoding, so answers must be
identical; the share that is identical is printed. Scoring: the yes/no/maybe options by log-likelihood.

Last line: `eval ratio=<items/s batched over one at a time, generation and scoring together>`.
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
DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
N_ITEMS, BATCH, NEW_TOKENS = int(os.environ.get("ITEMS", "32")), 16, 16
OPTIONS = [" yes", " no", " maybe"]


def questions() -> list[str]:
    if DATA.exists():
        return [it["QUESTION"] for it in json.loads(DATA.read_text()).values()][:N_ITEMS]
    from sdk.backends.training import SAMPLE_TEXT

    return [s.strip() + "?" for s in SAMPLE_TEXT.split(". ") if s.strip()][:N_ITEMS]


def generate_many(lm, prompts: list[str], max_new_tokens: int, batch: int) -> list[str]:  # type: ignore[no-untyped-def]
    import torch

    tok = lm.tokenizer
    enc = [lm.encode(p)[-(lm.max_len - max_new_tokens):] for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(enc)
    pad = tok.pad_token_id or 0
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        width = max(len(enc[i]) for i in rows)
        ids = torch.tensor([[pad] * (width - len(enc[i])) + enc[i] for i in rows])
        mask = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in rows])
        with torch.no_grad():
            gen = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad)
        for row, i in enumerate(rows):
            text = tok.decode(gen[row][width:], skip_special_tokens=True)
            out[i] = text.strip().split("\n")[0].strip()
    return out


def scored_many(lm, contexts: list[str], options: list[str], batch: int) -> list[list[float]]:  # type: ignore[no-untyped-def]
    import torch

    pairs = [((i, j), lm._pair(c, o)) for i, c in enumerate(contexts) for j, o in enumerate(options)]
    pairs.sort(key=lambda p: len(p[1][0]))
    scores = [[0.0] * len(options) for _ in contexts]
    pad = lm.tokenizer.pad_token_id or 0
    step = batch * len(options)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        width = max(len(ids) for _, (ids, _) in chunk)
        ids_t = torch.tensor([ids + [pad] * (width - len(ids)) for _, (ids, _) in chunk])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for _, (ids, _) in chunk])
        with torch.no_grad():
            logprobs = torch.log_softmax(lm.model(input_ids=ids_t, attention_mask=mask).logits.float(), dim=-1)
        for row, ((i, j), (ids, n)) in enumerate(chunk):
            positions = torch.arange(len(ids) - n - 1, len(ids) - 1)
            scores[i][j] = float(logprobs[row, positions, torch.tensor(ids[len(ids) - n:])].sum())
    return scores


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdk.backends.evaluate import LocalModel
    from sdk.backends.training import make_tiny_model

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    qs = questions()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "m", " ".join(qs) * 2, layers=4, hidden=256, heads=4, vocab=800,
                                 context=256)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        lm = LocalModel(model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
    prompts = [lm.generation_prompt(q) for q in qs]
    print(f"{len(qs)} items, batch {BATCH}, {NEW_TOKENS} new tokens, torch threads {torch.get_num_threads()}")

    t = time.perf_counter()
    one = [lm.generate(q, NEW_TOKENS) for q in qs]
    t_gen_one = time.perf_counter() - t
    t = time.perf_counter()
    many = generate_many(lm, prompts, NEW_TOKENS, BATCH)
    t_gen_many = time.perf_counter() - t
    same = sum(a == b for a, b in zip(one, many)) / len(qs)
    print(f"generate: one at a time {len(qs) / t_gen_one:6.1f} items/s, batched {len(qs) / t_gen_many:6.1f} items/s,"
          f" identical answers {same:.3f}")

    t = time.perf_counter()
    s_one = [lm.logliks(p, OPTIONS) for p in prompts]
    t_sc_one = time.perf_counter() - t
    t = time.perf_counter()
    s_many = scored_many(lm, prompts, OPTIONS, BATCH)
    t_sc_many = time.perf_counter() - t
    agree = sum(max(range(3), key=a.__getitem__) == max(range(3), key=b.__getitem__) for a, b in zip(s_one, s_many))
    worst = max(abs(x - y) for a, b in zip(s_one, s_many) for x, y in zip(a, b))
    print(f"score:    one at a time {len(qs) / t_sc_one:6.1f} items/s, batched {len(qs) / t_sc_many:6.1f} items/s,"
          f" same choice {agree / len(qs):.3f}, max |logp diff| {worst:.2e}")
    ratio = (t_gen_one + t_sc_one) / (t_gen_many + t_sc_many)
    print(f"eval ratio={ratio:.1f}")


if __name__ == "__main__":
    main()
