"""`dsl validate` start-up time against `python -c "import torch"`, measured side by side in one run.

Target: ratio < 0.5. Prints each median, then `ratio=<validate/import_torch>` last. `--quick`: one run a side.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

RUNS = pick(7, 1)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    recipe = ROOT / "recipes" / "quickstart.dsl"
    if not recipe.exists():
        recipe = next((p for p in (ROOT / "recipes").glob("*.dsl") if p.is_file()), ROOT / "tests" / "golden" / "bad_enum.dsl")
    validate = [sys.executable, "-m", "dsl.cli", "validate", str(recipe)]
    torch = [sys.executable, "-c", "import torch"]
    if RUNS > 1:
        timed(validate), timed(torch)  # warm the file cache for both
    a, b = [], []
    for _ in range(RUNS):  # interleaved, so both see the same machine load
        a.append(timed(validate))
        b.append(timed(torch))
    va, vb = statistics.median(a), statistics.median(b)
    print(f"dsl validate {recipe.name}: median {va * 1000:.0f} ms over {RUNS} runs")
    print(f"python -c 'import torch': median {vb * 1000:.0f} ms over {RUNS} runs")
    print(f"target: ratio < 0.5 -> {'met' if va / vb < 0.5 else 'NOT met'}")
    print(f"ratio={va / vb:.3f}")


if __name__ == "__main__":
    main()
