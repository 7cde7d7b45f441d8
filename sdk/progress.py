"""Rich progress for long steps; silent when not on a terminal or when disabled."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional


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


class Progress:
    """``with progress.task("training", total=steps) as t: t.advance(); t.update(loss=1.2)``."""

    def __init__(self, enabled: Optional[bool] = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._rich: Optional[Any] = None

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
    def task(self, description: str, total: Optional[float] = None) -> Iterator[_Task]:
        if self._rich is None:
            yield _Task(None, None)
            return
        task_id = self._rich.add_task(description, total=total, info="")
        handle = _Task(self._rich, task_id)
        try:
            yield handle
        finally:
            handle.done()
