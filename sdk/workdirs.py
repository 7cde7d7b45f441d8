"""Where a recipe's state and artifacts live: the one function that decides it (:func:`workdir_for`).

By default each recipe has its own workdir, ``.dsl/<domain>/`` beside it, so the recipes of one folder never share
(and never delete) each other's artifacts. A workdir given explicitly is refused when its state belongs to another
domain. A workdir of the old shared layout (``.dsl/state.json`` beside the recipes) is moved, whole, to
``.dsl/<its domain>/`` the first time a recipe of that folder is used, and the user is told once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from sdk.errors import Diagnostic, DslError
from sdk.records.files import read_text_nofollow
from sdk.state import WorkdirLock

ROOT = ".dsl"  # the folder, beside the recipe, that holds one workdir per domain
_MOVING = ".dsl.migrating-"  # the old shared workdir between the two renames of its migration

logger = logging.getLogger("sdk.workdirs")


def default_workdir(spec: Any) -> Path:
    """``.dsl/<domain>/`` in the recipe's folder (``spec.base_dir``)."""
    return Path(spec.base_dir) / ROOT / spec.name


def workdir_for(spec: Any, workdir: Optional[Union[str, Path]] = None,
                say: Optional[Callable[[str], None]] = None) -> Path:
    """The workdir of ``spec``: ``workdir`` when given, else :func:`default_workdir` (migrating the old shared
    layout first, telling ``say``, by default the ``sdk.workdirs`` logger). Refused, with what to do, when the
    state in it belongs to another domain: applying there would delete that domain's artifacts."""
    if workdir is not None:
        wd = Path(workdir)
    else:
        migrate_shared(Path(spec.base_dir) / ROOT, say or logger.warning)
        wd = default_workdir(spec)
    check_owner(wd, spec.name)
    return wd


def owner(workdir: Path) -> Optional[str]:
    """The domain recorded in ``workdir/state.json``, or None (no state, no domain recorded, or unreadable: the
    state store reports the last)."""
    try:  # a regular file only: a FIFO planted as state.json must not block every command
        data = json.loads(read_text_nofollow(Path(workdir) / "state.json", follow=True))
    except (OSError, ValueError, RecursionError):
        return None
    domain = data.get("domain") if isinstance(data, dict) else None
    return domain if isinstance(domain, str) else None


def check_owner(workdir: Path, domain: str) -> None:
    other = owner(workdir)
    if other is not None and other != domain:
        _refuse(f"the workdir {workdir} holds the state of domain {other!r}, not {domain!r}: using it for "
                f"{domain!r} would delete the artifacts of {other!r}",
                f"leave out --workdir (each recipe then has its own, .dsl/{domain}/ beside it), give another "
                f"folder, or move {workdir} away to start afresh")


def migrate_shared(root: Path, say: Callable[[str], None]) -> None:
    """Move a workdir of the old shared layout (``root/state.json`` of domain X) to ``root/X/``, without loss:
    two renames (``root`` to a sibling folder, then into the new ``root``), under the old workdir's lock; a
    migration interrupted between them is finished here."""
    _finish_interrupted(root, say)
    if not (root / "state.json").is_file():
        return
    domain = owner(root)
    if domain is None:
        _refuse(f"{root} is a workdir of the old shared layout and records no domain (or is unreadable)",
                f"move it to {root}/<domain>/, <domain> being the domain of the recipe it belongs to")
    nested = sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
    if nested:  # an older release wrote its shared state beside workdirs of this layout: sort it out by hand
        _refuse(f"{root} holds a workdir of the old shared layout (state.json of domain {domain!r}) and the "
                f"workdirs of {', '.join(nested)}",
                f"move {root}'s state.json, artifacts/ and checkpoints/ into {root / domain}/")
    moving = root.parent / f"{_MOVING}{domain}"
    with WorkdirLock(root):
        if not (root / "state.json").is_file():  # another process migrated it meanwhile
            return
        os.rename(root, moving)
    _finish(root, moving, domain, say)


def _finish_interrupted(root: Path, say: Callable[[str], None]) -> None:
    for moving in sorted(root.parent.glob(f"{_MOVING}*")) if root.parent.is_dir() else []:
        _finish(root, moving, moving.name[len(_MOVING):], say)


def _finish(root: Path, moving: Path, domain: str, say: Callable[[str], None]) -> None:
    target = root / domain
    if target.exists():
        _refuse(f"{moving} holds the old shared workdir of domain {domain!r}, and {target} exists too",
                f"keep the one you want as {target} and move the other away")
    root.mkdir(parents=True, exist_ok=True)
    os.rename(moving, target)
    say(f"note: each recipe now has its own workdir: moved the workdir of domain {domain!r} from {root} to "
        f"{target} (nothing else changed)")


def _refuse(message: str, hint: str) -> None:
    raise DslError(message, [Diagnostic(message, hint=hint)])
