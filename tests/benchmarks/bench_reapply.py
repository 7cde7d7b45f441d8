"""A no-op re-apply of the completed quickstart against `python -c "import torch"`, side by side in one run.

Runs `dsl apply recipes/quickstart.dsl` first if the quickstart has not been applied (that takes minutes), then
times the no-op re-apply (which must plan every step as up to date, load no model and rebuild no index).
Target: ratio <= 2. Last line: `ratio=<noop_apply/import_torch>`.
`--quick`: a recipe of two cheap steps (a corpus and a tiny base model) applied in a temporary folder instead of the
quickstart, one run a side.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import QUICK, pick  # noqa: E402

RECIPE = ROOT / "recipes" / "quickstart.dsl"
RUNS = pick(5, 1)
QUICK_RECIPE = """domain reapply {
  base_model tiny { architecture = llama { layers = 1, hidden = 32, heads = 2, vocab = 300, context = 64 } }
  corpus notes { paths = ["notes.txt"] }
}
"""


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    if QUICK:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "notes.txt").write_text("The DRX cycle of site Bage lasts 512 ms.\n")
            (Path(tmp) / "reapply.dsl").write_text(QUICK_RECIPE)
            measure(Path(tmp) / "reapply.dsl")
        return
    measure(RECIPE)


def measure(recipe: Path) -> None:
    dsl = [sys.executable, "-m", "dsl.cli"]
    plan = json.loads(subprocess.run(dsl + ["plan", str(recipe), "--json"], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout)
    if any(s["action"] != "noop" for s in plan["steps"]):
        print(f"{recipe.name} not applied yet: running dsl apply once{'' if QUICK else ' (minutes)'}", flush=True)
        subprocess.run(dsl + ["apply", str(recipe), "--no-progress"], cwd=ROOT, check=True, capture_output=QUICK)
    apply_cmd = dsl + ["apply", str(recipe), "--json", "--no-progress"]
    torch_cmd = [sys.executable, "-c", "import torch"]
    if RUNS > 1:
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
