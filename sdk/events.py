"""The event log of each apply: one JSON line per event in ``<workdir>/runs/<run_id>.jsonl``.

The executor appends ``run_started``, ``step_started``, ``step_finished`` and ``run_finished``; a training job
(in this process, or rank 0 of a launched run) appends ``metric`` lines as its trainer logs them, so a reader (``dsl
ui``, :mod:`sdk.tracking`) follows a run live without scraping a terminal. Each line is one small ``O_APPEND``
write, so lines from several processes never interleave; no link is followed. A line::

    {"time": 1764925500.1, "run": "20261205T091500-042ab12", "event": "metric", "step": "finetune.sip",
     "data": {"name": "train_loss", "value": 1.23, "step": 40}}

Run ids sort by time (UTC ``YYYYMMDDTHHMMSS-mmmxxxx``, milliseconds then random hex). Nothing here imports a heavy library.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from sdk.records.files import NotRegular, open_regular
from sdk.records.state import Status

RUNS = "runs"
EVENTS_ENV = "DSL_EVENTS"  # {"path", "run", "step"} of the step running now, read by training jobs
RUN_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{4,16}$")
EVENTS = ("run_started", "step_started", "metric", "step_finished", "run_finished")
_TAIL = 65536  # bytes read from a log's end to find its run_finished line


class UnknownRun(KeyError):
    """A run id that is malformed or has no event log in this workdir."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


def new_run_id(now: Optional[float] = None) -> str:
    """A run id that sorts by start time, to the millisecond: ``20261205T091500-042ab12`` (the three digits after
    the dash are milliseconds, so two applies in one second still list newest first; four random hex digits
    follow)."""
    t = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"-{int(t * 1000) % 1000:03d}" + secrets.token_hex(2)


def runs_dir(workdir: "str | Path") -> Path:
    return Path(workdir) / RUNS


def log_path(workdir: "str | Path", run_id: str) -> Path:
    """The event log of a run; :class:`UnknownRun` for an id that is not a run id (no path tricks)."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise UnknownRun(f"{run_id!r} is not a run id (like 20261205T091500-042ab12)")
    return runs_dir(workdir) / f"{run_id}.jsonl"


def kept_predictions(workdir: "str | Path", run_id: str, step_id: str) -> Path:
    """Where run ``run_id`` keeps the answers of eval step ``step_id`` it ran (see ``EventLog``)."""
    log_path(workdir, run_id)  # a run id, or UnknownRun
    if not re.fullmatch(r"[a-z_]+\.[A-Za-z0-9_]+", step_id):
        raise UnknownRun(f"{step_id!r} is not a step id")
    return runs_dir(workdir) / run_id / f"{step_id}.predictions.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (a JSON line must parse everywhere)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def append_event(path: "str | Path", run_id: str, event: str, step: Optional[str] = None,
                 data: Optional[dict[str, Any]] = None) -> None:
    """Append one event line to ``path`` in one ``O_APPEND`` write (the file is made if missing; a link is
    refused)."""
    line = json.dumps({"time": time.time(), "run": run_id, "event": event, "step": step, "data": _clean(data or {})},
                      separators=(",", ":"), allow_nan=False) + "\n"
    p = Path(path)
    if p.parent.is_symlink():
        raise OSError(errno.ELOOP, f"{p.parent} is a symbolic link; the event log never follows one")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


class EventLog:
    """The event log of one apply, written by the executor. Nothing is written until the first step runs (a no-op
    apply leaves no run behind). A write that fails (a full disk) is said once through ``log`` and never fails the
    apply."""

    def __init__(self, workdir: "str | Path", recipe: Optional[str], domain: str, plan: Any,
                 log: Any = None, run_id: Optional[str] = None) -> None:
        self.workdir = Path(workdir)
        self.run_id = run_id or new_run_id()
        self.path = log_path(self.workdir, self.run_id)
        self.started = False
        self.failed: Optional[str] = None
        self._log = log or (lambda msg: None)
        self._head = {"recipe": recipe, "domain": domain,
                      "plan": [{"id": s.id, "action": s.action.value, "reason": s.reason} for s in plan.steps]}

    def emit(self, event: str, step: Optional[str] = None, **data: Any) -> None:
        if not self.started:
            self.started = True
            self.emit("run_started", **self._head, pid=os.getpid())
        if self.failed is None:
            try:
                append_event(self.path, self.run_id, event, step, data)
            except OSError as e:
                self.failed = str(e)
                self._log(f"the event log {self.path} cannot be written ({e}); this run is not logged")

    def step_started(self, step: Any) -> None:
        self.emit("step_started", step.id, action=step.action.value, kind=step.kind, backend=step.backend,
                  reason=step.reason, config=getattr(step, "config", None))

    def step_finished(self, step: Any, outcome: Any) -> None:
        status = {"ran": Status.DONE.value}.get(outcome.status, outcome.status)  # an outcome's "ran" is a step done
        figures = self._figures(step) if status in Status.finished() else {}
        if status in Status.finished():
            self._keep_predictions(step)
        self.emit("step_finished", step.id, status=status, seconds=round(float(outcome.seconds), 3),
                  fingerprint=step.fingerprint if status != "deleted" else "", summary=outcome.summary,
                  error=outcome.error, metrics=figures)

    def _keep_predictions(self, step: Any) -> None:
        """A copy of an eval step's answers (``predictions.jsonl``, up to 64 MiB) kept with this run, so two runs'
        answers to an item can be compared after a later run replaced the artifact. Best effort, never fatal."""
        src = self.workdir / "artifacts" / step.id / str(step.fingerprint) / "predictions.jsonl"
        try:
            if src.is_symlink() or not src.is_file() or src.stat().st_size > 64 * 2**20:
                return
            dest = kept_predictions(self.workdir, self.run_id, step.id)
            if dest.parent.is_symlink():
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except (OSError, UnknownRun):
            pass

    def _figures(self, step: Any) -> dict[str, Any]:
        """The numbers a finished step recorded (its manifest's metrics), kept in the log so that a later run
        replacing the artifact does not take them away from this run's page."""
        path = self.workdir / "artifacts" / step.id / str(step.fingerprint) / "manifest.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}
        except (OSError, ValueError, AttributeError):
            return {}
        if not isinstance(metrics, dict):
            return {}
        if len(json.dumps(metrics, default=str)) <= 200_000:  # an eval's figures per system, with their CIs
            return metrics
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def finish(self, ok: bool, steps: list[str], interrupted: bool = False) -> None:
        if self.started:
            self.emit("run_finished", ok=bool(ok) and not interrupted, steps=steps, interrupted=interrupted)

    @contextmanager
    def recording(self, result: Any) -> Iterator[None]:
        """Around the executor's walk: ``run_finished`` at its end (``interrupted`` when it raised, e.g. Ctrl-C)."""
        try:
            yield
        except BaseException:
            self.finish(False, result.ran, interrupted=True)
            raise
        self.finish(result.ok, result.ran)

    @contextmanager
    def job(self, step: Any) -> Iterator[None]:
        """While a step runs: ``DSL_EVENTS`` names this log, so its training job (and a launched run's rank 0)
        appends its loss curves here."""
        os.environ[EVENTS_ENV] = json.dumps({"path": str(self.path.resolve()), "run": self.run_id, "step": step.id})
        try:
            yield
        finally:
            os.environ.pop(EVENTS_ENV, None)


def job_logger(env_value: Optional[str] = None) -> Optional[Any]:
    """In a training job: a function ``log(name, value, step)`` appending metric events to the running apply's
    log (from ``DSL_EVENTS``), or None when no apply asked for one. A failed write never stops training."""
    raw = os.environ.get(EVENTS_ENV) if env_value is None else env_value
    if not raw:
        return None
    try:
        target = json.loads(raw)
        path, run_id, step = str(target["path"]), str(target["run"]), target.get("step")
    except (ValueError, KeyError, TypeError):
        return None

    def log(name: str, value: float, stepno: int) -> None:
        try:
            append_event(path, run_id, "metric", step, {"name": name, "value": float(value), "step": int(stepno)})
        except OSError:
            pass

    return log


# ------------------------------------------------------------------------------------------------ reading


def _parse(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for raw in lines:
        try:
            ev = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a torn, foreign or hostile (nested thousands deep) line is skipped, never fatal
        if isinstance(ev, dict) and ev.get("event") in EVENTS and isinstance(ev.get("data", {}), dict):
            out.append(ev)
    return out


def _open(path: Path) -> int:
    if path.parent.is_symlink():
        raise UnknownRun(f"{path.parent} is a symbolic link")
    try:
        return open_regular(path)  # a FIFO must not block the reader
    except NotRegular:
        raise UnknownRun(f"{path} is not a regular file") from None
    except FileNotFoundError:
        raise UnknownRun(f"no run {path.stem} in {path.parent.parent}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnknownRun(f"{path} is a symbolic link") from None
        raise


def read_events(workdir: "str | Path", run_id: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The events of a run from byte ``offset`` on, and the offset to read from next time (only whole lines are
    consumed, so a line being written is read on the next call). :class:`UnknownRun` for an unknown run."""
    fd = _open(log_path(workdir, run_id))
    try:
        os.lseek(fd, max(0, int(offset)), os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    end = data.rfind(b"\n") + 1
    return _parse(data[:end].splitlines()), max(0, int(offset)) + end


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(path: Path) -> Optional[dict[str, Any]]:
    """One run's row from its first line and its tail (the whole file only while it runs)."""
    try:
        fd = _open(path)
    except (UnknownRun, OSError):
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.read(fd, min(size, _TAIL))
        first = _parse(head.split(b"\n", 1)[:1])
        os.lseek(fd, max(0, size - _TAIL), os.SEEK_SET)
        tail = _parse(os.read(fd, _TAIL).splitlines()[-8:])
    finally:
        os.close(fd)
    if not first or first[0]["event"] != "run_started":
        return None
    start = first[0]
    done = next((e for e in reversed(tail) if e["event"] == "run_finished"), None)
    row: dict[str, Any] = {"run_id": path.stem, "started": start.get("time"), "recipe": start["data"].get("recipe"),
                           "domain": start["data"].get("domain"), "finished": None, "ok": None, "steps": []}
    if done is not None:
        ok = bool(done["data"].get("ok"))
        row.update(finished=done.get("time"), ok=ok, steps=list(done["data"].get("steps", [])),
                   status="succeeded" if ok else "failed")
    else:
        events, _ = read_events(path.parent.parent, path.stem)
        row["steps"] = [e["step"] for e in events if e["event"] == "step_finished"]
        row["status"] = "running" if _alive(start["data"].get("pid")) else "interrupted"
    return row


def list_runs(workdir: "str | Path", limit: Optional[int] = None) -> list[dict[str, Any]]:
    """The workdir's runs, newest first: ``run_id``, ``started``, ``finished`` (None while running, or when the
    apply was killed), ``ok`` (None then too), ``status`` (running | succeeded | failed | interrupted), ``steps``
    (the ids of the steps that ran), ``recipe``, ``domain``."""
    folder = runs_dir(workdir)
    if not folder.is_dir() or folder.is_symlink():
        return []
    names = sorted((p.name for p in folder.iterdir() if p.suffix == ".jsonl" and RUN_ID.match(p.stem)), reverse=True)
    out = []
    for name in names:
        row = _summary(folder / name)
        if row is not None:
            out.append(row)
            if limit is not None and len(out) >= limit:
                break
    return out


def metric_series(workdir: "str | Path", run_id: str) -> dict[str, dict[str, list[list[float]]]]:
    """step id -> metric name -> ``[[step number, value], ...]`` in the order they were logged."""
    events, _ = read_events(workdir, run_id)
    out: dict[str, dict[str, list[list[float]]]] = {}
    for e in events:
        d = e["data"]
        if e["event"] == "metric" and isinstance(d.get("name"), str) and isinstance(d.get("value"), (int, float)):
            point = [int(d.get("step") or 0), float(d["value"])]
            out.setdefault(str(e.get("step")), {}).setdefault(d["name"], []).append(point)
    return out
