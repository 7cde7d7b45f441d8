"""MLflow tracking of each apply that ran something (work in progress: the interface first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

LOCAL_STORE = "mlruns"


def local_uri(workdir: "str | Path") -> str:
    """The workdir's own tracking store, ``<workdir>/mlruns`` (nothing to start)."""
    return (Path(workdir).resolve() / LOCAL_STORE).as_uri()


def record_run(spec: Any, workdir: "str | Path", run_id: str, *, state: Any = None,
               warn: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """Log the run ``run_id`` (read from its event log and the steps' artifacts) to MLflow; the MLflow run id."""
    return None


def list_runs(workdir: "str | Path", uri: Optional[str] = None) -> list[dict[str, Any]]:
    """The tracked runs of a workdir's store, newest first."""
    return []
