"""The SDK's overhead on fine-tuning: the same tiny model, data and step count trained once through `dsl apply`
and once by a plain hand-written TRL SFTTrainer script, each in a fresh process (imports, model load,
tokenisation and training counted on both sides), alternating, three runs each. The ratio compares the best
(least disturbed) run of each side, since other load on a small CPU machine swings single runs by several times;
medians are printed too. A third side, the plain script ending without Python's teardown as ``dsl`` does
(``_teardown.py``), gives the SDK's own cost. Target: ratio <= 1.05. Last line: `ratio=<sdk/plain>`.
`--quick`: 2 steps, one run of the SDK and of the plain script (the os._exit side is not run: its time is taken
as the plain script's).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import QUICK, pick  # noqa: E402
from _teardown import NO_TEARDOWN, own_cost_line  # noqa: E402

STEPS = pick(60, 2)
RUNS = pick(3, 1)

PLAIN = r'''
import json, sys
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

torch.set_num_threads(2)
model_dir, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
set_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data)]
cfg = SFTConfig(output_dir=out, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=2e-4,
                lr_scheduler_type="cosine", seed=42, data_seed=42, logging_steps=5, save_steps=50, save_total_limit=2,
                report_to=[], disable_tqdm=True, use_cpu=True, max_length=256, assistant_only_loss=True,
                dataloader_num_workers=0)
peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear")
trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
trainer.train()
trainer.model.save_pretrained(out + "/adapter")
tok.save_pretrained(out + "/adapter")
'''.replace("STEPS", str(STEPS)) + NO_TEARDOWN

RECIPE = f'''domain bench {{
  base_model tiny {{ path = "model" }}
  dataset qa {{ path = "sft.jsonl" }}
  finetune sip {{ from = base_model.tiny  data = dataset.qa  method = lora  max_steps = {STEPS}  batch_size = 4  max_length = 256 }}
}}
'''


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    try:
        measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> None:
    from sdk.backends.training.common import SAMPLE_TEXT, make_tiny_model

    make_tiny_model(work / "model", SAMPLE_TEXT * 4, layers=4, hidden=128, vocab=800, context=256)
    questions = [s.strip() for s in SAMPLE_TEXT.split(".") if s.strip()]
    rows = [{"messages": [{"role": "user", "content": f"Explain: {q}?"}, {"role": "assistant", "content": q + "."}]}
            for q in questions * 8]
    (work / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (work / "plain.py").write_text(PLAIN)
    (work / "r.dsl").write_text(RECIPE)
    sdk_times, plain_times, bare_times = [], [], []
    for run in range(RUNS):
        wd = work / f"wd{run}"
        sdk_times.append(timed([sys.executable, "-m", "dsl.cli", "apply", str(work / "r.dsl"), "--workdir", str(wd),
                                "--no-progress"]))
        plain = [sys.executable, str(work / "plain.py"), str(work / "model"), str(work / "sft.jsonl")]
        plain_times.append(timed(plain + [str(work / f"plain{run}")]))
        bare_times.append(plain_times[-1] if QUICK else timed(plain + [str(work / f"bare{run}"), "--no-teardown"]))
    a, b = min(sdk_times), min(plain_times)
    print(f"{STEPS} LoRA steps of a 4-layer model on {len(rows)} chat rows, fresh process each time")
    print(f"dsl apply (dataset + base model + finetune steps): {', '.join(f'{t:.2f}s' for t in sdk_times)}; "
          f"best {a:.2f}s, median {statistics.median(sdk_times):.2f}s")
    print(f"plain TRL SFTTrainer script: {', '.join(f'{t:.2f}s' for t in plain_times)}; "
          f"best {b:.2f}s, median {statistics.median(plain_times):.2f}s")
    print(own_cost_line(sdk_times, bare_times))
    print(f"median ratio {statistics.median(sdk_times) / statistics.median(plain_times):.3f}")
    print(f"target: ratio <= 1.05 -> {'met' if a / b <= 1.05 else 'NOT met'}")
    print(f"ratio={a / b:.3f}")


if __name__ == "__main__":
    main()
