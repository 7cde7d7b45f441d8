"""Workdir state: ``state.json`` (serial, lineage id, one entry per applied step), saved atomically, and the
workdir lock that keeps two applies apart."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdk.errors import DslError, LockError

STATE_VERSION = 1


@dataclass
class State:
    lineage: str = ""  # set on the first save; the same for the life of the workdir
    serial: int = 0
    domain: Optional[str] = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "lineage": self.lineage, "serial": self.serial, "domain": self.domain,
                "steps": self.steps, "hashes": self.hashes}


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers never see half a file."""
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
        if not self.path.exists():
            return State()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DslError(f"{self.path}: state file is unreadable ({e}); move it away to start afresh") from None
        if data.get("version") != STATE_VERSION:
            raise DslError(f"{self.path}: state version {data.get('version')} is not supported")
        return State(data["lineage"], data["serial"], data.get("domain"), data.get("steps", {}), data.get("hashes", {}))

    def save(self, state: State) -> None:
        state.lineage = state.lineage or str(uuid.uuid4())
        state.serial += 1
        write_atomic(self.path, json.dumps(state.to_json(), indent=2, sort_keys=True))


class WorkdirLock:
    """An exclusive, non-blocking lock on ``WORKDIR/.lock`` (flock: released by the OS if the process dies)."""

    def __init__(self, workdir: Path) -> None:
        self.path = Path(workdir) / ".lock"
        self._fd: Optional[int] = None

    def __enter__(self) -> "WorkdirLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
