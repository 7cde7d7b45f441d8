"""Workdir state: ``state.json`` (serial, lineage id, one entry per applied step), saved atomically, and the
workdir lock that keeps two applies apart."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdk.errors import DslError, LockError

STATE_VERSION = 2  # 2: artifact paths relative to the workdir; inputs keyed by what they produced (facets)
ARTIFACTS = "artifacts"


@dataclass
class State:
    lineage: str = ""  # set on the first save; the same for the life of the workdir
    serial: int = 0
    domain: Optional[str] = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: dict[str, list[Any]] = field(default_factory=dict)
    workdir: Optional[Path] = None  # where it was read from (not saved: a workdir refers to itself relatively)

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "lineage": self.lineage, "serial": self.serial, "domain": self.domain,
                "steps": self.steps, "hashes": self.hashes}

    def artifact_path(self, step_id: str) -> Optional[Path]:
        """The artifact folder of a step, resolved inside this workdir's artifacts folder; None when the recorded
        path would lead anywhere else (an absolute path, ``..``, a symlink out)."""
        rel = (self.steps.get(step_id) or {}).get("artifact")
        if not rel or self.workdir is None:
            return None
        return inside(self.workdir, rel)


def inside(workdir: Path, rel: str) -> Optional[Path]:
    """``workdir/rel`` when it resolves inside ``workdir/artifacts`` (symlinks followed), else None."""
    if not isinstance(rel, str) or Path(rel).is_absolute():
        return None
    root = (Path(workdir) / ARTIFACTS).resolve()
    target = (Path(workdir) / rel).resolve()
    return Path(workdir) / rel if target != root and target.is_relative_to(root) else None


def remove_inside(workdir: Path, path: Path) -> bool:
    """Delete a folder only when it lies inside ``workdir/artifacts`` or ``workdir/checkpoints`` (resolved,
    symlinks included); every delete of the executor goes through here. Returns whether it deleted."""
    import shutil

    p = Path(path)
    if p.is_symlink():
        return False
    resolved = p.resolve()
    for name in (ARTIFACTS, "checkpoints"):
        root = (Path(workdir) / name).resolve()
        if resolved != root and resolved.is_relative_to(root):
            shutil.rmtree(resolved, ignore_errors=True)
            return True
    return False


LINKS_REFUSED = (".lock", "state.json", ARTIFACTS, "checkpoints")  # never followed: they are the workdir's own


def refuse_links(workdir: Path) -> None:
    """A workdir's own entries (lock, state, artifacts, checkpoints) are never symbolic links: a link there would
    make an apply truncate, overwrite or delete whatever it points at."""
    for name in LINKS_REFUSED:
        p = Path(workdir) / name
        if p.is_symlink():
            raise DslError(f"{p} is a symbolic link (to {os.readlink(p)}); dsl never follows a link out of a "
                           f"workdir: remove the link (rm {p}) and run again")


def confined(workdir: Path, *paths: Path) -> None:
    """Refuse a folder a step will write into when it resolves outside the workdir's ``artifacts/`` or
    ``checkpoints/`` (a link at ``artifacts/STEP`` or ``checkpoints/STEP``)."""
    roots = [(Path(workdir) / name).resolve() for name in (ARTIFACTS, "checkpoints")]
    for p in paths:
        real = Path(p).resolve()
        if not any(real != r and real.is_relative_to(r) for r in roots):
            raise DslError(f"{p} leads outside the workdir (to {real}); dsl never writes through a link: remove "
                           "the link and run again")


def read_text_nofollow(path: Path) -> str:
    """The text of a workdir file, refusing a symbolic link in its last component (OSError ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        return f.read()


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers never see half a file. The
    temporary file is created exclusively (never through a link), and the rename replaces a link at ``path``
    rather than writing where it points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class StateStore:
    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / "state.json"

    def load(self) -> State:
        if not self.path.exists() and not self.path.is_symlink():
            return State(workdir=self.workdir)
        if self.path.is_symlink():
            raise DslError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}); a state file is never read "
                           f"through a link: replace it with the file itself")
        try:
            data = json.loads(read_text_nofollow(self.path))
        except (OSError, json.JSONDecodeError) as e:
            raise DslError(f"{self.path}: state file is unreadable ({e}); move it away to start afresh") from None
        problem = _shape_problem(data)
        if problem:
            raise DslError(f"{self.path}: state file is damaged ({problem}); move it away to start afresh")
        if data.get("version") not in (1, STATE_VERSION):
            raise DslError(f"{self.path}: state version {data.get('version')} is not supported")
        steps = data.get("steps", {})
        if data["version"] == 1:
            _migrate_v1(self.workdir, steps)
        return State(data["lineage"], data["serial"], data.get("domain"), steps, data.get("hashes", {}),
                     workdir=self.workdir)

    def save(self, state: State) -> None:
        state.lineage = state.lineage or str(uuid.uuid4())
        state.serial += 1
        try:
            write_atomic(self.path, json.dumps(state.to_json(), indent=2, sort_keys=True))
        except OSError as e:
            raise DslError(f"{self.path}: cannot save the state ({e.strerror or e}); "
                           "the workdir must be writable and its disk not full") from None


_ENTRY_TYPES = {"status": str, "fingerprint": str, "artifact": str, "backend": str, "config": dict, "files": dict,
                "inputs": dict, "facets": dict, "metrics": dict, "error": str, "manifest_sha256": str}


def _shape_problem(data: Any) -> Optional[str]:
    """Where valid JSON does not have the state's structure: the path of the first bad entry."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    for key, tp in (("lineage", str), ("serial", int), ("steps", dict), ("hashes", dict)):
        if key in ("lineage", "serial") and key not in data:
            return f"{key} is missing"
        if key in data and not isinstance(data[key], tp):
            return f"{key} is not {'a number' if tp is int else 'an object' if tp is dict else 'a string'}"
    for step_id, entry in (data.get("steps") or {}).items():
        if not isinstance(entry, dict):
            return f"steps.{step_id} is not an object"
        for key, tp in _ENTRY_TYPES.items():
            if key in entry and entry[key] is not None and not isinstance(entry[key], tp):
                return f"steps.{step_id}.{key} has the wrong type"
    for path, entry in (data.get("hashes") or {}).items():
        if not isinstance(entry, list):
            return f"hashes.{path} is not a list"
    return None


def _migrate_v1(workdir: Path, steps: dict[str, Any]) -> None:
    """Version 1 stored absolute artifact paths: those inside this workdir become relative; any other is dropped
    (the step then re-runs rather than read or delete anything outside the workdir)."""
    root = Path(workdir).resolve()
    for entry in steps.values():
        art = entry.get("artifact")
        if isinstance(art, str) and Path(art).is_absolute():
            p = Path(art).resolve()
            entry["artifact"] = p.relative_to(root).as_posix() if p.is_relative_to(root) else None


class WorkdirLock:
    """An exclusive, non-blocking lock on ``WORKDIR/.lock`` (flock: released by the OS if the process dies)."""

    def __init__(self, workdir: Path) -> None:
        self.path = Path(workdir) / ".lock"
        self._fd: Optional[int] = None

    def __enter__(self) -> "WorkdirLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_links(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:  # made a link since the check above
                refuse_links(self.path.parent)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise LockError(
                f"{self.path.parent} is locked by another dsl apply ({holder or 'unknown process'}); "
                "wait for it to finish, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
