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

    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert re.search(rf"^Contracts: {len(contracts)} kept, 0 broken\.$", r.stdout, re.M), r.stdout[-4000:]
    # the step backends (one per step kind) never import each other, directly or through a shared module
    assert re.search(r"^Step modules are independent of each other KEPT$", r.stdout, re.M), r.stdout[-4000:]


def test_importing_sdk_does_not_import_dsl() -> None:
    code = "import sys, sdk, sdk.spec, sdk.planner, sdk.executor, sdk.workspace; print('dsl' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


def test_the_spec_imports_of_sdk_what_the_architecture_doc_says() -> None:
    """docs/architecture.md draws the few modules of sdk the spec imports; that line and the code agree."""
    import ast
    import re

    line = next(x for x in (ROOT / "docs" / "architecture.md").read_text().splitlines()
                if "the spec imports nothing else of sdk" in x)
    documented = set(re.findall(r"sdk\.\w+", line))
    imported: set[str] = set()
    for path in (ROOT / "sdk" / "spec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "sdk" else [f"sdk.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            imported |= {".".join(n.split(".")[:2]) for n in names if n.startswith("sdk.")}
    imported.discard("sdk.spec")
    assert imported == documented, f"the spec imports {sorted(imported)}; the doc says {sorted(documented)}"


def test_backends_import_the_project_at_top_level_unless_a_comment_says_why() -> None:
    """A function-local ``from sdk...`` import in sdk/backends/** is kept only to keep a heavy library or a cycle out
    of start-up, and says so (``# local: why``); the rest are module imports."""
    import ast

    unexplained = []
    for path in sorted((ROOT / "sdk" / "backends").rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sdk" \
                        and not any("# local:" in lines[i - 1] for i in (node.lineno, node.end_lineno or node.lineno)):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
    assert not unexplained, "\n".join(unexplained)
