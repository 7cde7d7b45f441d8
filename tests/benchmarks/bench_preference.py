"""Preference tuning on a tiny model: does DPO through the SDK (``align``) raise preference accuracy over the SFT
model it starts from, and what does the SDK cost over a plain TRL ``DPOTrainer`` script with the same settings?

1. A tiny Llama is fine-tuned (LoRA, merged, through ``dsl apply``) on chat rows that use every answer phrase, right and
   wrong alike, so SFT alone has no reason to prefer the right one.
2. Preference pairs: for each of several questions, chosen = its right answer and rejected = a wrong or evasive
   answer of about the same length, paired differently across pairs.
   The training pairs and the held-out pairs use different question wordings and numbers.
3. Preference accuracy on the held-out pairs = share where log p(chosen | prompt) > log p(rejected | prompt),
   for the SFT model and for the DPO model; the difference gets a paired bootstrap CI and p-value.
4. Wall time: ``dsl apply`` of the align step (fresh process, fresh workdir; the base_model step is free) against a
   plain TRL DPOTrainer script (fresh process), same model, pairs, LoRA, steps and optimiser settings,
   alternating, RUNS each; the ratio compares the best run of each side (a shared small CPU swings single runs).
   A third side runs the plain script ending without Python's teardown, as ``dsl`` does (``_teardown.py``): the
   SDK's time over it, the SDK's own cost, is printed before the last line.

Last line: ``pref_acc sft=<a> dpo=<b> overhead=<ratio>`` (target: b > a with p < 0.05, ratio <= 1.05).
``--quick``: no SFT (the DPO sides start from the tiny model), 2 DPO steps on 16 training pairs, 8 held-out pairs,
one run of the SDK and of the plain script (the os._exit side is not run: its time is taken as the plain script's).
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

STEPS = pick(30, 2)
RUNS = pick(3, 1)
TRAIN_ROUNDS, HELD_ROUNDS = pick(12, 2), pick(8, 1)
LR = 5e-3

QA = [("What starts a SIP call", "The INVITE request starts it."),
      ("What ends a SIP call", "The BYE request ends it."),
      ("What carries the media", "RTP carries the media."),
      ("What describes the media", "SDP describes the media."),
      ("What stores subscriber data", "The HSS stores it."),
      ("What routes SIP in IMS", "The S-CSCF routes it."),
      ("What runs voice over LTE", "VoLTE runs the voice."),
      ("What carries authentication", "Diameter carries it.")]
# wrong or evasive answers of about the same length: the rejected side
WRONG = ["Maybe the REGISTER does it.", "I think a 404 ends it.", "Perhaps the PSTN carries it.",
         "It is not described.", "Nobody stores that data.", "The phone routes itself.", "Wi-Fi runs the voice.",
         "No protocol carries it."]
TRAIN_WORDING = ["{q}? ({i})", "Tell me: {q}? #{i}"]
HELD_WORDING = ["Question {i}: {q}?", "{q}, please? [{i}]"]

PLAIN = r'''
import json, sys
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import DPOConfig, DPOTrainer

torch.set_num_threads(2)
model_dir, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
set_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data)]
cfg = DPOConfig(output_dir=out, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=LR, beta=0.1,
                loss_type="sigmoid", lr_scheduler_type="cosine", seed=42, data_seed=42, logging_steps=5,
                logging_first_step=True, save_steps=50, save_total_limit=2, report_to=[], disable_tqdm=True,
                use_cpu=True, max_length=256, dataloader_num_workers=0, gradient_checkpointing=False)
peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear")
trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                     peft_config=peft)
trainer.train()
trainer.model.save_pretrained(out + "/adapter")
tok.save_pretrained(out + "/adapter")
'''.replace("STEPS", str(STEPS)).replace("LR", repr(LR)) + NO_TEARDOWN

SFT_RECIPE = '''domain bench {
  base_model tiny { path = "model" }
  dataset mixed { path = "sft.jsonl" }
  finetune sft { from = base_model.tiny  data = dataset.mixed  method = lora  merge = true  max_steps = 40  batch_size = 8
                 learning_rate = 0.001  max_length = 256 }
}
'''
ALIGN_RECIPE = f'''domain bench {{
  base_model sft {{ path = "sft_model" }}
  align dpo {{ from = base_model.sft  pairs = "train_pairs.jsonl"  method = dpo  beta = 0.1  loss = sigmoid
              max_steps = {STEPS}  batch_size = 4  learning_rate = {LR}  max_length = 256 }}
}}
'''


def pairs(wordings: list[str], numbers: range) -> list[dict]:
    out = []
    for i in numbers:
        for k, (q, good) in enumerate(QA):
            bad = WRONG[(k + i) % len(WRONG)]
            out.append({"prompt": [{"role": "user", "content": wordings[i % len(wordings)].format(q=q, i=i)}],
                        "chosen": good, "rejected": bad})
    return out


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
    return time.perf_counter() - t


def answer_logprob(model, tok, prompt: list[dict], answer: str) -> float:
    import torch

    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=True,
                                   return_dict=True)["input_ids"]
    assert full[:len(head)] == head, "the chat template does not render the prompt as a prefix"
    ids = torch.tensor([full])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    target = ids[0, 1:]
    picked = logp.gather(1, target[:, None])[:, 0]
    return float(picked[len(head) - 1:].sum())


def pref_correct(handle_, rows: list[dict]) -> list[float]:
    from sdk.backends.models import load

    model, tok = load(handle_)
    return [float(answer_logprob(model, tok, r["prompt"], r["chosen"]) > answer_logprob(model, tok, r["prompt"], r["rejected"]))
            for r in rows]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-pref-"))
    try:
        measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> None:
    from sdk.backends.models import ModelHandle, handle
    from sdk.backends.training.common import SAMPLE_TEXT, make_tiny_model
    from sdk.metrics import bootstrap_ci, paired_bootstrap_p
    from sdk.workspace import open_workspace

    answers = " ".join(a for _, a in QA) + " " + " ".join(WRONG) + " " + " ".join(q + "?" for q, _ in QA)
    make_tiny_model(work / "model", SAMPLE_TEXT * 3 + answers * 3, layers=2, hidden=96, vocab=700, context=256)
    # SFT: every question is answered once by every answer, right and wrong, so SFT has no preference
    sft = [{"messages": [{"role": "user", "content": f"{q}? ({j})"}, {"role": "assistant", "content": a}]}
           for j, a in enumerate([a for _, a in QA] + WRONG) for q, _ in QA]
    (work / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in sft) + "\n")
    train, held = pairs(TRAIN_WORDING, range(TRAIN_ROUNDS)), pairs(HELD_WORDING, range(100, 100 + HELD_ROUNDS))
    (work / "train_pairs.jsonl").write_text("\n".join(json.dumps(r) for r in train) + "\n")
    (work / "sft.dsl").write_text(SFT_RECIPE)
    if QUICK:  # the DPO sides start from the tiny model itself: SFT is tested elsewhere, and costs a process here
        sft_model = work / "model"
    else:
        timed([sys.executable, "-m", "dsl.cli", "apply", str(work / "sft.dsl"), "--no-progress"], work)
        sft_model = open_workspace(work / "sft.dsl").artifact("finetune.sft").path / "merged"
    (work / "sft_model").symlink_to(sft_model)
    (work / "plain.py").write_text(PLAIN)
    (work / "plain_pairs.jsonl").write_text("\n".join(json.dumps({k: r[k] if k == "prompt" else
                                                                  [{"role": "assistant", "content": r[k]}]
                                                                  for k in ("prompt", "chosen", "rejected")})
                                                      for r in train) + "\n")  # the same chat rows the SDK trains
    (work / "align.dsl").write_text(ALIGN_RECIPE)
    sdk_times, plain_times, bare_times = [], [], []
    for run in range(RUNS):
        sdk_times.append(timed([sys.executable, "-m", "dsl.cli", "apply", str(work / "align.dsl"), "--workdir",
                                str(work / f"wd{run}"), "--no-progress"], work))
        plain = [sys.executable, str(work / "plain.py"), str(work / "sft_model"), str(work / "plain_pairs.jsonl")]
        plain_times.append(timed(plain + [str(work / f"plain{run}")], work))
        bare_times.append(plain_times[-1] if QUICK else timed(plain + [str(work / f"bare{run}"), "--no-teardown"], work))
    dpo_art = open_workspace(work / "align.dsl", work / "wd0").artifact("align.dpo")
    a = pref_correct(ModelHandle(model=str(sft_model)), held)
    b = pref_correct(handle(dpo_art), held)
    diff, lo, hi = bootstrap_ci([y - x for x, y in zip(a, b)], resamples=2000)
    p = paired_bootstrap_p(b, a, resamples=2000)
    acc_a, acc_b = sum(a) / len(a), sum(b) / len(b)
    ratio = min(sdk_times) / min(plain_times)
    print(f"{len(train)} training pairs, {len(held)} held-out pairs (other wordings and numbers); "
          f"{STEPS} DPO steps (LoRA, sigmoid loss, beta 0.1, batch 4) over a LoRA-fine-tuned (merged) 2-layer model")
    print(f"held-out preference accuracy: sft {acc_a:.3f}, dpo {acc_b:.3f}; difference {diff:+.3f} "
          f"(95% CI {lo:+.3f} .. {hi:+.3f}), paired bootstrap p = {p:.4f}")
    print(f"dsl apply (align step, fresh process): {', '.join(f'{t:.2f}s' for t in sdk_times)}; "
          f"best {min(sdk_times):.2f}s, median {statistics.median(sdk_times):.2f}s")
    print(f"plain TRL DPOTrainer script: {', '.join(f'{t:.2f}s' for t in plain_times)}; "
          f"best {min(plain_times):.2f}s, median {statistics.median(plain_times):.2f}s")
    print(own_cost_line(sdk_times, bare_times))
    print(f"target: dpo > sft with p < 0.05 -> {'met' if acc_b > acc_a and p < 0.05 else 'NOT met'}; "
          f"ratio <= 1.05 -> {'met' if ratio <= 1.05 else 'NOT met'}")
    print(f"pref_acc sft={acc_a:.3f} dpo={acc_b:.3f} overhead={ratio:.3f}")


if __name__ == "__main__":
    main()
