"""Training throughput of the SDK's default fine-tuning configuration over plain TRL SFTTrainer defaults, on the
same variable-length chat rows, model and step count, side by side in one run.

Both sides train LoRA adapters (the SDK's default method, with its default rank, alpha and dropout) on a 4-layer
model built here, with the same batch size, learning rate, schedule, seed and max_length; they differ in what the
SDK changes by default: padding-free batches (rows flattened into one sequence, position ids per example) where
plain TRL pads each batch to its longest row. The SDK side is `dsl apply` of a recipe; the plain side is a
hand-written SFTTrainer script run on the very train/validation files the SDK's dataset step wrote. Each side runs
in its own fresh process, alternating, RUNS times; tokens/s is TRL's count of useful (non-padding) tokens over the
time in `trainer.train()`, best run of each side (other load on a small shared machine swings single runs).
The eval loss is the final `trainer.evaluate()` on the validation rows. Target: ratio >= 1.3, loss within 2%.
Last line: `tokens_per_s ratio=<r> loss sdk=<a> trl=<b>`.
`--quick`: 2 steps of a 1-layer hidden-64 model on 40 rows of at most 128 tokens, one run a side.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

STEPS = pick(40, 2)
BATCH = 8
RUNS = int(os.environ.get("BENCH_RUNS", pick("2", "1")))  # a run of both sides takes ~15 min on 2 busy cores
MAX_LENGTH = pick(512, 128)
LAYERS, HIDDEN, ROWS = pick(4, 1), pick(256, 64), pick(400, 40)

PLAIN = r'''
import json, sys, time
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

torch.set_num_threads(2)
model_dir, train, val, out = sys.argv[1:5]
set_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
rows = lambda p: [{"messages": json.loads(l)["messages"]} for l in open(p) if l.strip()]
cfg = SFTConfig(output_dir=out, max_steps=STEPS, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                learning_rate=2e-4, lr_scheduler_type="cosine", seed=42, data_seed=42, logging_steps=5,
                save_steps=50, report_to=[], disable_tqdm=True, use_cpu=True, max_length=MAX_LENGTH,
                assistant_only_loss=True, dataloader_num_workers=0, gradient_checkpointing=False,
                eval_strategy="steps", eval_steps=STEPS // 2)
peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear")
trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows(train)),
                     eval_dataset=Dataset.from_list(rows(val)), processing_class=tok, peft_config=peft)
t = time.time()
trainer.train()
seconds = time.time() - t
print(json.dumps({"train_seconds": seconds, "train_tokens": trainer._total_train_tokens,
                  "eval_loss": trainer.evaluate()["eval_loss"]}))
'''.replace("STEPS", str(STEPS)).replace("BATCH", str(BATCH)).replace("MAX_LENGTH", str(MAX_LENGTH))

RECIPE = f'''domain bench {{
  base_model tiny {{ path = "model" }}
  dataset qa {{ path = "sft.jsonl"  validation_split = 0.1 }}
  finetune sip {{ from = base_model.tiny  data = dataset.qa  max_steps = {STEPS}  batch_size = {BATCH}  max_length = {MAX_LENGTH} }}
}}
'''


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Chat rows of very different lengths, as real instruction data has: short factual answers and long
    explanations (about 15 to 400 tokens a row)."""
    from sdk.backends.training.common import SAMPLE_TEXT

    sentences = [s.strip() + "." for s in SAMPLE_TEXT.split(".") if s.strip()]
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        question = rnd.choice(sentences)
        answer = " ".join(rnd.choice(sentences) for _ in range(rnd.choice([1, 1, 1, 2, 2, 3, 5, 8, 13, 20])))
        rows.append({"messages": [{"role": "user", "content": f"Explain: {question}"},
                                  {"role": "assistant", "content": answer[:1500]}]})
    return rows


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-tput-"))
    try:
        measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> None:
    import sdk.workspace
    from sdk.backends.training.common import SAMPLE_TEXT, make_tiny_model

    make_tiny_model(work / "model", SAMPLE_TEXT * 4, layers=LAYERS, hidden=HIDDEN, heads=4, vocab=800,
                    context=MAX_LENGTH)
    rows = chat_rows(ROWS)
    (work / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (work / "plain.py").write_text(PLAIN)
    (work / "r.dsl").write_text(RECIPE)
    sdk_runs, plain_runs = [], []
    for i in range(RUNS):
        wd = work / f"wd{i}"
        run([sys.executable, "-m", "dsl.cli", "apply", str(work / "r.dsl"), "--workdir", str(wd), "--no-progress"])
        ws = sdk.workspace.open_workspace(work / "r.dsl", workdir=wd)
        m = ws.artifact("finetune.sip").manifest["metrics"]
        data = ws.artifact("dataset.qa")
        sdk_runs.append({"train_seconds": m["train_seconds"], "train_tokens": m["train_tokens"],
                         "eval_loss": m["eval_loss"], "batches": m.get("batches")})
        out = run([sys.executable, str(work / "plain.py"), str(work / "model"),
                   str(data.path / data.outputs["train"]), str(data.path / data.outputs["validation"]),
                   str(work / f"plain{i}")])
        plain_runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"run {i + 1}: sdk {sdk_runs[-1]['train_tokens'] / sdk_runs[-1]['train_seconds']:.0f} tokens/s "
              f"(eval loss {sdk_runs[-1]['eval_loss']:.4f}), plain TRL {plain_runs[-1]['train_tokens'] / plain_runs[-1]['train_seconds']:.0f} "
              f"tokens/s (eval loss {plain_runs[-1]['eval_loss']:.4f})", flush=True)
    tps = lambda r: r["train_tokens"] / r["train_seconds"]
    a, b = max(sdk_runs, key=tps), max(plain_runs, key=tps)
    print(f"{STEPS} LoRA steps, batch {BATCH}, {LAYERS}-layer hidden-{HIDDEN} model, {len(rows)} chat rows of varied length")
    print(f"sdk default ({a['batches']} batches): " + ", ".join(f"{tps(r):.0f}" for r in sdk_runs)
          + f" useful tokens/s; {a['train_tokens']} tokens; eval loss {a['eval_loss']:.4f}")
    print("plain TRL SFTTrainer (padded): " + ", ".join(f"{tps(r):.0f}" for r in plain_runs)
          + f" useful tokens/s; {b['train_tokens']} tokens; eval loss {b['eval_loss']:.4f}")
    ratio, rel = tps(a) / tps(b), abs(a["eval_loss"] - b["eval_loss"]) / b["eval_loss"]
    print(f"target: ratio >= 1.3 and loss within 2% -> {'met' if ratio >= 1.3 and rel <= 0.02 else 'NOT met'}")
    print(f"tokens_per_s ratio={ratio:.3f} loss sdk={a['eval_loss']:.4f} trl={b['eval_loss']:.4f}")


if __name__ == "__main__":
    main()
