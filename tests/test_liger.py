"""``compute { kernels = liger }``: Liger Kernel's fused Triton kernels for training. They need a CUDA GPU and the
liger-kernel package, so here (no GPU) the plan refuses them with a located error; ``--skip-checks`` trains without
them and the manifest says so; and where both are present (mocked: there is no GPU here) the Trainer is asked to
patch the model with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.state import StateStore
from tests._tiny import SAMPLE_TEXT
from tests.conftest import run_dsl

OFFLINE = {"HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}
RECIPE = '''domain t {
  base_model tiny { architecture = llama { layers = 1, hidden = 32, heads = 2, vocab = 300, context = 64 } }
  corpus docs { paths = ["a.txt"]  split = { by = word, length = 40, overlap = 0 }  dedupe = none }
  pretrain base { from = base_model.tiny  corpus = corpus.docs  max_steps = 2  batch_size = 2  block_size = 32 }
  compute {
    kernels = liger
  }
}
'''


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_cuda(), reason="a CUDA GPU is present here: the plan accepts liger")
def test_liger_without_a_gpu_is_a_located_plan_error_and_skip_checks_trains_without_it(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(SAMPLE_TEXT * 3)
    path = tmp_path / "r.dsl"
    path.write_text(RECIPE)
    line = RECIPE.splitlines().index("    kernels = liger") + 1
    proc = run_dsl("plan", str(path), env=OFFLINE)
    assert proc.returncode == 1
    assert f"r.dsl:{line}:" in proc.stderr and "kernels = liger needs a CUDA GPU" in proc.stderr
    proc = run_dsl("apply", str(path), "--skip-checks", "--no-progress", env=OFFLINE, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning:" in proc.stderr and "kernels = liger" in proc.stderr
    metrics = StateStore(tmp_path / ".dsl" / "t").load().steps["pretrain.base"]["metrics"]
    assert metrics["kernels"].startswith("none (liger asked for;") and metrics["steps"] == 2


def test_the_compute_block_decides_and_the_trainer_gets_use_liger_kernel(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    import importlib.util

    import torch

    from sdk.backends.training import common as T

    block = {"batch_size": 2, "gradient_accumulation": 1, "learning_rate": 1e-3, "weight_decay": 0.0,
             "warmup_ratio": 0.0, "scheduler": "linear", "seed": 0, "logging_steps": 1, "save_steps": 10,
             "max_steps": 2, "epochs": 1, "compute": {"kernels": "liger"}}
    assert "use_liger_kernel" not in T.training_args({**block, "compute": {}}, tmp_path, has_eval=False)
    assert T.kernels_used({**block, "compute": {}}) == "none"
    real_find_spec = importlib.util.find_spec
    # a GPU and the package cannot exist here: both mocked, to check what the Trainer would be asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "liger_kernel" else real_find_spec(name, *a))
    assert T.kernels_used(block) == "liger"
    assert T.training_args(block, tmp_path, has_eval=False)["use_liger_kernel"] is True
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real_find_spec(name, *a))
    assert T.kernels_used(block) == "none (liger asked for; liger-kernel is not installed)"
    assert "use_liger_kernel" not in T.training_args(block, tmp_path, has_eval=False)
