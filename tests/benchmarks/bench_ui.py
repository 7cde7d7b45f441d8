"""`dsl ui`'s runs page with 1,000 runs in the workdir: the page must render in under 1 s.

Synthetic event logs (each a run_started line with a 9-step plan, 9 steps started and finished, 20 metric lines,
run_finished) are written with sdk.events, then ``GET /runs`` is timed through the real app (FastAPI test client,
templates, sdk.events.list_runs), warm, median of 5. Printed: the page's size and seconds, and as the last line
`ui ratio=<seconds / 1 s budget> runs=<runs listed>` (under 1: within budget). `--quick`: 20 runs, 2 timings.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

RUNS, REPEATS, BUDGET_S = pick(1000, 20), pick(5, 2), 1.0


def write_runs(workdir: Path, n: int) -> None:
    from sdk import events as EV

    steps = [f"step.s{i}" for i in range(9)]
    start = 1_764_900_000.0
    for r in range(n):
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start + 60 * r)) + f"-{r:04x}"
        path = EV.log_path(workdir, run_id)
        EV.append_event(path, run_id, "run_started", None, {"recipe": "bench.dsl", "domain": "bench", "pid": 0,
                        "plan": [{"id": s, "action": "replace", "reason": "configuration changed"} for s in steps]})
        for s in steps:
            EV.append_event(path, run_id, "step_started", s, {"action": "replace"})
            EV.append_event(path, run_id, "step_finished", s, {"status": "done", "seconds": 1.5, "fingerprint": "ab" * 32})
        for k in range(20):
            EV.append_event(path, run_id, "metric", steps[0], {"name": "train_loss", "value": 3.0 - k / 10, "step": k})
        EV.append_event(path, run_id, "run_finished", None, {"ok": True, "steps": steps})


def main() -> None:
    from fastapi.testclient import TestClient

    from sdk.ui.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "docs").mkdir()
        (folder / "docs" / "a.txt").write_text("text\n")
        (folder / "bench.dsl").write_text('domain bench {\n  corpus c { paths = ["docs/*.txt"] }\n}\n')
        workdir = folder / "wd"
        t = time.perf_counter()
        write_runs(workdir, RUNS)
        print(f"wrote {RUNS} run logs in {time.perf_counter() - t:.2f}s")
        client = TestClient(create_app(folder / "bench.dsl", workdir))
        first = client.get("/runs")
        assert first.status_code == 200, first.text[first.text.find("<main>"):][:800]
        listed = first.text.count('class="run"')
        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            r = client.get("/runs")
            times.append(time.perf_counter() - t)
            assert r.status_code == 200
        seconds = statistics.median(times)
        print(f"GET /runs: {listed} runs, {len(first.text) / 1024:.0f} KiB, median {seconds:.3f}s of {REPEATS} "
              f"(budget {BUDGET_S:.0f}s)")
        print(f"ui ratio={seconds / BUDGET_S:.3f} runs={listed}")


if __name__ == "__main__":
    main()
