"""Every `dsl` command in the README and the tutorial is run, so the docs cannot drift from the product: the
tutorial's here, the README's in tests/test_e2e_quickstart.py (on the quickstart that module applies once).

Fenced blocks tagged ``file=PATH`` are written first (``append`` inserts the block before the file's closing
brace); every line starting with ``dsl`` in a ``console`` block is then run in order and must succeed.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_dsl

pytestmark = pytest.mark.slow

FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(markdown: str) -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(markdown)]


def run_doc(doc: Path, workdir: Path) -> list[str]:
    ran = []
    for lang, info, body in blocks(doc.read_text()):
        attrs = dict(a.split("=", 1) if "=" in a else (a, "") for a in info.split())
        if "file" in attrs:
            target = workdir / attrs["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if "append" in attrs:
                text = target.read_text().rstrip()
                assert text.endswith("}")
                target.write_text(text[:-1].rstrip() + "\n\n" + body.rstrip() + "\n}\n")
            else:
                target.write_text(body)
        elif lang == "console":
            for line in body.splitlines():
                command = line.split("#", 1)[0].strip()
                if not command.startswith("dsl "):
                    continue
                proc = run_dsl(*shlex.split(command)[1:], cwd=workdir, timeout=1500)
                assert proc.returncode == 0, f"{doc.name}: `{command}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                ran.append(command)
    return ran


def test_tutorial_commands(tmp_path: Path) -> None:
    ran = run_doc(ROOT / "docs" / "tutorial.md", tmp_path)
    assert len(ran) >= 10 and any(c.startswith("dsl route") for c in ran)
