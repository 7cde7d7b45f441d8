"""Quick mode of the benchmarks: ``--quick`` on the command line or ``BENCH_QUICK=1`` in the environment.

Each ``bench_*.py`` then runs its own code path on tiny sizes (a few items, a few steps, one run a side) in
seconds, and prints the same lines, the last one included, so that ``tests/test_benchmarks_quick.py`` can run
every benchmark in ``make test`` and check the last line's shape: benchmarks cannot rot unseen. The figures of a
quick run mean nothing; the full sizes are the defaults. A benchmark that needs ``../shared/data`` prints
``SKIP: <why>`` and its last line with ``nan`` figures when the folder is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

QUICK = "--quick" in sys.argv or os.environ.get("BENCH_QUICK", "") not in ("", "0")
if "--quick" in sys.argv:  # so that a benchmark's own argument parser never sees it
    sys.argv.remove("--quick")
if QUICK:
    os.environ["BENCH_QUICK"] = "1"  # the scripts a benchmark starts see it too

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def pick(full: T, quick: T) -> T:
    """``quick`` in quick mode, else ``full``."""
    return quick if QUICK else full


def skip_without(path: Path, last_line: str) -> bool:
    """True (after printing why, and the last line with nan figures) when ``path`` is absent."""
    if path.exists():
        return False
    print(f"SKIP: {path} is absent (the shared data folder sits beside the repository)")
    print(last_line)
    return True
