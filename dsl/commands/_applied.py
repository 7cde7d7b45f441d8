"""What the commands that run applied systems (``dsl serve``) read: the workdir alone. The recipe, when it loads,
finds the workdir and says what changed since it was applied; broken or deleted, its workdir is still found (the
one ``.dsl/<domain>/`` beside it, or ``--workdir``) and what was applied is served from it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

import click

from sdk.errors import DslError, SpecError


def applied(file: str, workdir: Optional[str]) -> tuple[Any, Path]:
    """(workspace, folder relative paths resolve in). Its ``spec`` is None when the recipe cannot be loaded."""
    from dsl.parser import load_recipe
    from sdk.workspace import open_workspace

    try:
        recipe = load_recipe(file)
    except SpecError as e:
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        wd = Path(workdir) if workdir else _beside(Path(file), problem)
        click.echo(f"note: {file} cannot be loaded ({problem}); serving what {wd} applied", err=True)
        return _Applied.of(wd), Path(file).resolve().parent
    ws = open_workspace(recipe.spec, workdir, loaded=recipe)
    return ws, Path(recipe.spec.base_dir)


def _beside(file: Path, problem: str) -> Path:
    """The workdir of a recipe that does not load: ``.dsl/<domain>/`` beside it, its domain read from the text when
    it can be (else the file's stem), or the only workdir there."""
    from sdk.workdirs import ROOT

    root = file.resolve().parent / ROOT
    found = sorted(p.parent.name for p in root.glob("*/state.json"))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    named = re.search(r"^\s*domain\s+([A-Za-z_][\w-]*)", text, re.M)
    for name in ([named.group(1)] if named else []) + [file.stem]:
        if name in found:
            return root / name
    if len(found) == 1:
        return root / found[0]
    have = f"workdirs there: {', '.join(found)}" if found else f"no workdir in {root}"
    raise DslError(f"{file} cannot be loaded ({problem}), and which workdir to serve is not clear ({have}): "
                   "name it with --workdir")


class _Applied:
    """A workspace read from a workdir alone (no recipe)."""

    @staticmethod
    def of(workdir: Path) -> Any:
        from sdk.state import StateStore
        from sdk.workspace import Workspace

        if not (Path(workdir) / "state.json").is_file():
            raise DslError(f"{workdir} holds no applied state: run dsl apply first (or name the workdir with "
                           "--workdir)")

        class WorkdirOnly(Workspace):
            @property
            def source(self) -> str:
                return f"dsl apply RECIPE --workdir {workdir}"

        return WorkdirOnly(None, Path(workdir), StateStore(Path(workdir)).load())


def applied_version(entry: dict[str, Any]) -> str:
    """Which recipe version a step serves: when it was applied and its fingerprint (what it was applied from)."""
    at = entry.get("finished_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(at))) if isinstance(at, (int, float)) else "?"
    return f"the recipe version served: as applied at {when} (fingerprint {str(entry.get('fingerprint') or '?')[:12]})"


def drift(ws: Any, step_id: str) -> Optional[str]:
    """The recipe's drift since ``step_id`` was applied, noted on stderr (nothing without a recipe)."""
    if ws.spec is None:
        return None
    from dsl.commands._common import say_drift

    return say_drift(ws, step_id)
