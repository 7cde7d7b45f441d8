"""The import contracts of pyproject.toml (dsl -> sdk only; backends and serving below the planner and executor;
the spec below everything; no circles between sibling modules), checked by the real import-linter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a dev dependency (pyproject.toml [dev])"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    import re

    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", r.stdout)
    assert summary, r.stdout[-4000:]
    assert int(summary.group(1)) > 0 and int(summary.group(2)) == 0, summary.group(0)


def test_importing_sdk_does_not_import_dsl() -> None:
    code = "import sys, sdk, sdk.spec, sdk.planner, sdk.executor, sdk.workspace; print('dsl' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
