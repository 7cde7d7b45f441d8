"""Workdir state: ``state.json`` (serial, lineage id, one entry per applied step; its model and the one place it is
parsed and written are :mod:`sdk.records.state`), saved atomically, and the workdir lock that keeps two applies
apart."""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdk.errors import DslError, LockError
from sdk.records.files import read_text_nofollow, write_atomic  # noqa: F401 - re-exported: the workdir's file I/O
from sdk.records.state import STATE_VERSION, Status, parse_state, state_text  # noqa: F401 - re-exported

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


# never followed: they are the workdir's own (the event logs and kept predictions, the synth journals and eval
# answers, the tracking store)
LINKS_REFUSED = (".lock", "state.json", ARTIFACTS, "checkpoints", "runs", "cache", "mlruns", "mlruns/mlflow.db")
OWNED_TREES = ("runs", "cache", "checkpoints", "mlruns")  # written by the project alone (logs, journals, answers,
# checkpoints, the tracking store)


def refuse_links(workdir: Path) -> None:
    """A workdir's own entries (lock, state, artifacts, checkpoints, runs, cache, the tracking store) are never
    symbolic links: a link there would make an apply truncate, overwrite or delete whatever it points at."""
    for name in LINKS_REFUSED:
        p = Path(workdir) / name
        if p.is_symlink():
            raise DslError(f"{p} is a symbolic link (to {os.readlink(p)}); dsl never follows a link out of a "
                           f"workdir: remove the link (rm {p}) and run again")
    for name in OWNED_TREES:  # nothing of the project makes a link: one inside these was planted
        for top, dirs, files in os.walk(Path(workdir) / name):  # links are listed, never descended into
            for entry in (*dirs, *files):
                p = Path(top) / entry
                if p.is_symlink():
                    raise DslError(f"{p} is a symbolic link (to {os.readlink(p)}); dsl never writes or reads "
                                   f"through a link in a workdir: remove the link (rm {p}) and run again")
                if entry in files and not p.is_file():  # a FIFO would block its reader forever, a device never end
                    raise DslError(f"{p} is not a regular file (a FIFO, device or socket); dsl never reads or writes "
                                   f"one in a workdir: remove it (rm {p}) and run again")


def no_link_below(root: Path, path: Path) -> Path:
    """``path``, refused (a DslError) when it or any folder between ``root`` and it is a symbolic link: a file the
    project writes or reads inside a folder it owns (a journal, a cache, a log) is never reached through a link."""
    p, root = Path(path), Path(root)
    parts = p.relative_to(root).parts if p.is_relative_to(root) else p.parts
    at = root if p.is_relative_to(root) else Path()
    for part in parts:
        at = at / part
        if at.is_symlink():
            raise DslError(f"{at} is a symbolic link (to {os.readlink(at)}); dsl never follows a link out of a "
                           f"folder it owns: remove the link (rm {at}) and run again")
    return p


def confined(workdir: Path, *paths: Path) -> None:
    """Refuse a folder a step will write into when it resolves outside the workdir's ``artifacts/`` or
    ``checkpoints/`` (a link at ``artifacts/STEP`` or ``checkpoints/STEP``)."""
    roots = [(Path(workdir) / name).resolve() for name in (ARTIFACTS, "checkpoints")]
    for p in paths:
        real = Path(p).resolve()
        if not any(real != r and real.is_relative_to(r) for r in roots):
            raise DslError(f"{p} leads outside the workdir (to {real}); dsl never writes through a link: remove "
                           "the link and run again")


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
            text = read_text_nofollow(self.path)
        except (OSError, UnicodeDecodeError) as e:
            raise DslError(f"{self.path}: state file is unreadable ({e}); move it away to start afresh") from None
        data = parse_state(text, self.path)  # validated: a damaged file names its first bad field
        steps = data["steps"]
        if data["version"] == 1:
            _migrate_v1(self.workdir, steps)
        return State(data["lineage"], data["serial"], data["domain"], steps, data["hashes"], workdir=self.workdir)

    def save(self, state: State) -> None:
        state.lineage = state.lineage or str(uuid.uuid4())
        state.serial += 1
        text = state_text(state.lineage, state.serial, state.domain, state.steps, state.hashes)
        try:
            write_atomic(self.path, text)
        except OSError as e:
            raise DslError(f"{self.path}: cannot save the state ({e.strerror or e}); "
                           "the workdir must be writable and its disk not full") from None


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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:  # made a link since the check above
                refuse_links(self.path.parent)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted as the lock: never written to
            os.close(fd)
            raise DslError(f"{self.path} is not a regular file (a FIFO, device or socket); dsl writes its lock "
                           f"there: remove it (rm {self.path}) and run again")
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
