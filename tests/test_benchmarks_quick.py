"""Benchmarks that cannot rot: every tests/benchmarks/bench_*.py runs in its quick mode (``--quick``: tiny sizes,
one run a side, seconds) and its last line keeps its shape: the benchmark's name and its key=value figures.

The figures of a quick run mean nothing and are not checked; the code path, the data it reads and the line a
reader (or a script) takes the result from are. A benchmark that needs ../shared/data skips with its reason when
that folder is absent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent / "benchmarks"
NUMBER = r"(?:[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|[-+]?inf)"
# the last line of each benchmark: words as written, N for a figure
LAST_LINES = {
    "bench_cli_startup": "ratio=N",
    "bench_embed": "embed ratio=N recall5_delta=N",
    "bench_eval_real": "evaluated=N sets=N",
    "bench_eval_throughput": "eval ratio=N",
    "bench_finetune_overhead": "ratio=N",
    "bench_grpo": "reward first=N last=N",
    "bench_preference": "pref_acc sft=N dpo=N overhead=N",
    "bench_rag_retrieval": "recall@5 bm25=N dense=N hybrid=N",
    "bench_reapply": "ratio=N",
    "bench_retrieval_adapt": "adapt r1_before=N r1_after=N ci_low=N latency_ratio=N train_s=N",
    "bench_retrieval_scale": "p50_ms bm25=N dense=N at=N speedup_bm25=N",
    "bench_route_real": "accuracy tfidf=N embedding=N qps=N",
    "bench_serve": "serve ratio_at_8=N ttft_p50_ms=N",
    "bench_stats": "stats ratio=N",
    "bench_synth": "synth speedup=N contamination_recall=N ledger_ok=True",
    "bench_train_throughput": "tokens_per_s ratio=N loss sdk=N trl=N",
    "bench_ui": "ui ratio=N runs=N",
}
# the quick runs of these took over ~20 s each on a 2-core machine
SLOW = {"bench_eval_real", "bench_finetune_overhead", "bench_grpo", "bench_preference", "bench_retrieval_adapt",
        "bench_serve", "bench_train_throughput"}


def shape(template: str) -> re.Pattern[str]:
    return re.compile("^" + r"\ ".join(re.escape(w).replace("N", NUMBER) for w in template.split(" ")) + "$")


def test_every_benchmark_has_a_last_line_shape() -> None:
    assert sorted(p.stem for p in BENCHMARKS.glob("bench_*.py")) == sorted(LAST_LINES)
    assert shape("a ratio=N b=N").match("a ratio=1.5 b=nan") and not shape("ratio=N").match("ratio=fast")


@pytest.mark.parametrize("bench", [pytest.param(b, marks=pytest.mark.slow) if b in SLOW else b
                                   for b in sorted(LAST_LINES)])
def test_benchmark_quick_mode_runs_and_keeps_its_last_line(bench: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK": "1", "HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / f"{bench}.py"), "--quick"], cwd=tmp_path, env=env, check=False,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    skipped = [ln for ln in lines if ln.startswith("SKIP: ")]
    assert lines and shape(LAST_LINES[bench]).match(lines[-1]), lines[-5:]
    if skipped:
        pytest.skip(skipped[0][len("SKIP: "):])
    assert "nan" not in lines[-1], lines[-1]  # figures were measured
    assert not list(tmp_path.glob("bench-*")), "the benchmark left its temporary folder behind"
