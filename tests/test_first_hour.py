"""The first hour of a new user: the environment is left alone, every printed next command runs, output is
readable (status on one screen, tables wrapped, answers stripped, plain progress lines in logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

_USER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HAYSTACK_TELEMETRY_ENABLED",
             "TOKENIZERS_PARALLELISM")


def test_a_corpus_step_leaves_the_users_environment_alone(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The DRX cycle of site Bage lasts 512 ms.\n")
    code = f"""
import json, os, sdk
spec = sdk.Domain("c", base_dir={str(tmp_path)!r}).corpus("docs", paths=["*.txt"]).build()
assert sdk.apply(spec).ok
import haystack.telemetry._telemetry as t
from huggingface_hub import constants
print(json.dumps({{"set": sorted(k for k in {_USER_ENV!r} if k in os.environ),
                  "offline": constants.is_offline_mode(), "telemetry_off": t.telemetry is None}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in _USER_ENV}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # nothing the user did not set, the hub reachable as the user's environment allows, Haystack's telemetry off
    assert out == {"set": [], "offline": False, "telemetry_off": True}, out
    assert "offline" not in proc.stderr.lower(), proc.stderr
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and json.loads(proc.stdout.strip().splitlines()[-1])["offline"] is True
