"""A no-op re-apply of the completed quickstart against `python -c "import torch"`, side by side in one run.

Runs `dsl apply recipes/quickstart.dsl` first if the quickstart has not been applied (that takes minutes), then
times the no-op re-apply (which must plan every step as up to date, load no model and rebuild no index).
Target: ratio <= 2. Last line: `ratio=<noop_apply/import_torch>`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "quickstart.dsl"
RUNS = 5


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    dsl = [sys.executable, "-m", "dsl.cli"]
    plan = json.loads(subprocess.run(dsl + ["plan", str(RECIPE), "--json"], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout)
    if any(s["action"] != "noop" for s in plan["steps"]):
        print("quickstart not applied yet: running dsl apply once (minutes)", flush=True)
        subprocess.run(dsl + ["apply", str(RECIPE), "--no-progress"], cwd=ROOT, check=True)
    apply_cmd = dsl + ["apply", str(RECIPE), "--json", "--no-progress"]
    torch_cmd = [sys.executable, "-c", "import torch"]
    timed(apply_cmd), timed(torch_cmd)
    a, b = [], []
    for _ in range(RUNS):
        ta, proc = timed(apply_cmd)
        out = json.loads(proc.stdout)
        assert all(s["status"] == "up_to_date" for s in out["steps"]), "a no-op apply ran a step"
        a.append(ta)
        b.append(timed(torch_cmd)[0])
    va, vb = statistics.median(a), statistics.median(b)
    print(f"no-op dsl apply (all {len(out['steps'])} steps up to date): median {va * 1000:.0f} ms over {RUNS} runs")
    print(f"python -c 'import torch': median {vb * 1000:.0f} ms over {RUNS} runs")
    print(f"target: ratio <= 2 -> {'met' if va / vb <= 2 else 'NOT met'}")
    print(f"ratio={va / vb:.3f}")


if __name__ == "__main__":
    main()
