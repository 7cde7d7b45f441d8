"""Reward tuning on a tiny model: does GRPO through the SDK (``reward``), with an option-accuracy reward taken from
the eval metrics, raise the mean reward over training?

1. A tiny Llama learns the answer format by SFT (``finetune``, all weights, through ``dsl apply``): multiple-choice
   prompts answered with an option number drawn at random, so after SFT it answers with a number but has no reason
   to pick the right one (the mean reward starts near 1/4).
2. The set: four options (a colour, an animal, a vehicle, a fruit) in a fixed order; every question asks for the
   animal in other words, so the right option is always the second: a rule the tiny model can learn.
3. ``reward`` (GRPO, TRL's GRPOTrainer, all weights) with ``rewards = { accuracy = 1.0 }`` for
   STEPS steps; the per-step mean reward comes from the step's ``rewards.json``.

Last line: ``reward first=<x> last=<y>``: the mean reward of the first and of the last WINDOW logged steps.
``--quick``: 2 SFT steps and 2 GRPO steps.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

STEPS = int(os.environ.get("BENCH_GRPO_STEPS", pick("40", "2")))
SFT_STEPS = pick(40, 2)
WINDOW = 5
OPTIONS = ["red", "dog", "car", "apple"]
# every question asks for the dog (option 2): a rule the tiny model can learn in a few dozen GRPO steps. (Four
# categories, each with its own option, did not rise within 40-60 steps: see docs/training.md.)
ASKS = [("Which one is an animal", 2), ("Which one barks", 2), ("Which one has four legs", 2),
        ("Which one is a pet", 2)]


def main() -> None:
    from sdk.backends.training.reward_data import _choice_prompt
    from tests._tiny import make_tiny_model

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_tiny_model(d / "model")
        prompts = [{"question": f"{ask}? ({i})", "choices": OPTIONS, "answer": str(gold)}
                   for i in range(8) for ask, gold in ASKS]
        (d / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
        sft = [{"messages": [{"role": "user", "content": _choice_prompt(f"{ask}? ({i})", OPTIONS)},
                             {"role": "assistant", "content": str(rng.randint(1, 4))}]}
               for i in range(8, 24) for ask, _ in ASKS]
        (d / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
        (d / "r.dsl").write_text(f'''domain bench {{
  base_model local {{ path = "model" }}
  dataset fmt {{ path = "sft.jsonl" }}
  finetune fmt {{ from = base_model.local  data = dataset.fmt  method = full  max_steps = {SFT_STEPS}  batch_size = 8
                 learning_rate = 0.003  logging_steps = 10 }}
  reward mc {{ from = finetune.fmt  prompts = "mc.jsonl"  rewards = {{ accuracy = 1.0 }}
              num_generations = 4  batch_size = 16  max_completion_length = 3  temperature = 1.0
              tune = full  max_steps = {STEPS}  learning_rate = 0.002  logging_steps = 1  save_steps = 1000 }}
}}
''')
        env = dict(os.environ, HF_HUB_OFFLINE="1", HAYSTACK_TELEMETRY_ENABLED="False")
        r = subprocess.run([sys.executable, "-m", "dsl.cli", "apply", str(d / "r.dsl")], cwd=d, env=env,
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(r.stdout[-3000:] + r.stderr[-3000:])
        curve = json.loads(next((d / ".dsl" / "bench" / "artifacts" / "reward.mc").glob("*/rewards.json")).read_text())
    rewards = [c["reward"] for c in curve]
    print("step rewards:", " ".join(f"{x:.2f}" for x in rewards))
    first = sum(rewards[:WINDOW]) / len(rewards[:WINDOW])
    last = sum(rewards[-WINDOW:]) / len(rewards[-WINDOW:])
    print(f"reward first={first:.3f} last={last:.3f}")


if __name__ == "__main__":
    main()
