"""Progress of long steps: rich bars on a terminal; plain lines when output is not a terminal (a log, CI): one
line each time a task passes another tenth of its total, or every 30 s, once it has run 5 s (step, %, rate, ETA);
nothing when disabled."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, TextIO


class _Task:
    def __init__(self, progress: Optional[Any], task_id: Any) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, n)

    def update(self, **fields: Any) -> None:
        """Set ``completed=``, ``total=``, ``description=``; other fields (e.g. loss=1.2) are shown as text."""
        if self._progress is not None:
            std = {k: fields.pop(k) for k in ("completed", "total", "description") if k in fields}
            if fields:
                std["info"] = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self._progress.update(self._id, **std)

    def done(self) -> None:
        if self._progress is not None:
            task = next(t for t in self._progress.tasks if t.id == self._id)
            if task.total is not None:
                self._progress.update(self._id, completed=task.total)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class _PlainTask:
    """A task's progress as plain lines, for output that is not a terminal."""

    def __init__(self, description: str, total: Optional[float], write: Callable[[str], None],
                 clock: Callable[[], float], every: float, seconds: float, after: float) -> None:
        self.description, self.total, self.completed, self.info = description, total, 0.0, ""
        self._write, self._clock, self._every, self._seconds, self._after = write, clock, every, seconds, after
        self._started = self._last = clock()
        self._base: Optional[tuple[float, float]] = None  # (time, completed) that the rate counts from
        self._shown = -1  # the last tenth (of ``every``) shown
        self.lines = 0

    def advance(self, n: float = 1) -> None:
        self._set(self.completed + n)

    def update(self, **fields: Any) -> None:
        if "total" in fields:
            self.total = fields.pop("total")
        if "description" in fields:
            self.description = fields.pop("description")
        completed = fields.pop("completed", None)
        if fields:
            self.info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        if completed is not None:
            if self._base is None and self.completed == 0:  # a resumed run starts where it left off
                self._base = (self._clock(), float(completed))
            self._set(float(completed))

    def done(self) -> None:
        if self.lines:  # a task long enough to have reported says that it finished
            self._emit(self._clock(), final=True)

    def _set(self, completed: float) -> None:
        self.completed = completed
        if self._base is None:
            self._base = (self._started, 0.0)
        now = self._clock()
        if now - self._started < self._after:
            return
        step = int(completed / self.total * round(1 / self._every) + 1e-9) if self.total else -1
        if step > self._shown or now - self._last >= self._seconds:
            self._shown = max(step, self._shown)
            self._emit(now)

    def _emit(self, now: float, final: bool = False) -> None:
        self._last, self.lines = now, self.lines + 1
        t0, c0 = self._base or (self._started, 0.0)
        rate = (self.completed - c0) / max(now - t0, 1e-9)
        done = f"{self.completed:g}/{self.total:g} ({self.completed / self.total:.0%})" if self.total \
            else f"{self.completed:g}"
        if final:
            tail = f"finished in {_clock(now - self._started)}"
        else:
            left = (self.total - self.completed) / rate if self.total and rate > 0 else None
            tail = f"{rate:.3g}/s" + (f", ETA {_clock(left)}" if left is not None else "")
        self._write(f"    {self.description}: {done}, {tail}" + (f"  {self.info}" if self.info else ""))


class Progress:
    """``with progress.task("training", total=steps) as t: t.advance(); t.update(loss=1.2)``.

    ``enabled``: rich bars (default: when stderr is a terminal). ``plain``: plain lines instead (default: when
    ``enabled`` is left out and stderr is not a terminal); ``enabled=False`` alone shows nothing."""

    def __init__(self, enabled: Optional[bool] = None, plain: Optional[bool] = None,
                 stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic,
                 every: float = 0.1, seconds: float = 30.0, after: float = 5.0) -> None:
        tty = sys.stderr.isatty()
        self.enabled = tty if enabled is None else enabled
        self.plain = (enabled is None and not tty) if plain is None else plain
        self._stream, self._clock, self._every, self._seconds, self._after = stream, clock, every, seconds, after
        self._rich: Optional[Any] = None

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(stderr=True), transient=False,
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    @contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Any]:
        if self._rich is None and self.plain and not self.enabled:
            plain = _PlainTask(description, total, self._write, self._clock, self._every, self._seconds, self._after)
            try:
                yield plain
            finally:
                plain.done()
            return
        if self._rich is None:
            yield _Task(None, None)
            return
        task_id = self._rich.add_task(description, total=total, info="")
        handle = _Task(self._rich, task_id)
        try:
            yield handle
        finally:
            handle.done()


class Relay:
    """The progress of a job that runs in other processes (a launcher's rank 0): each task's state written as JSON
    lines to ``path`` at most every ``every`` seconds, read back by :func:`mirror` in the process that launched it,
    which shows it like its own (bars on a terminal, plain lines in a log)."""

    def __init__(self, path: "str | Any", every: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.every, self.clock = str(path), every, clock

    @contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Any]:
        t = _RelayTask(self, description, total)
        try:
            yield t
        finally:
            t.done()


class _RelayTask:
    def __init__(self, relay: Relay, description: str, total: Optional[float]) -> None:
        self.relay, self.state = relay, {"description": description, "total": total, "completed": 0.0}
        self.fields: dict[str, Any] = {}
        self._last = -1e9
        self._write(force=True)

    def advance(self, n: float = 1) -> None:
        self.update(completed=self.state["completed"] + n)

    def update(self, **fields: Any) -> None:
        for key in ("total", "completed"):
            if key in fields:
                self.state[key] = fields.pop(key)
        self.fields.update(fields)
        self._write()

    def done(self) -> None:
        self._write(force=True, done=True)

    def _write(self, force: bool = False, done: bool = False) -> None:
        import json

        now = self.relay.clock()
        if not force and now - self._last < self.relay.every:
            return
        self._last = now
        line = json.dumps({**self.state, "fields": self.fields, "done": done}, default=str)
        with open(self.relay.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def mirror(path: "str | Any", progress: Any, stop: Any, every: float = 0.5) -> None:
    """Show what a :class:`Relay` writes to ``path`` through ``progress`` until ``stop`` (a threading.Event) is set
    and the file is read to its end. Run it in a thread beside the launched processes."""
    import json
    from contextlib import ExitStack

    tasks: dict[str, tuple[Any, ExitStack]] = {}
    pos, rest = 0, ""
    try:
        while True:
            finished = stop.is_set()
            try:
                with open(path, encoding="utf-8") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                chunk = ""
            *lines, rest = (rest + chunk).split("\n")
            for line in lines:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                name = str(ev.get("description"))
                if name not in tasks:
                    stack = ExitStack()
                    tasks[name] = (stack.enter_context(progress.task(name, total=ev.get("total"))), stack)
                task = tasks[name][0]
                state = {k: ev[k] for k in ("total", "completed") if ev.get(k) is not None}
                task.update(**ev.get("fields", {}), **state)
                if ev.get("done"):
                    tasks.pop(name)[1].close()
            if finished:
                return
            stop.wait(every)
    finally:
        for _, stack in tasks.values():
            stack.close()
