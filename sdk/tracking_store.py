"""Reading the tracking store back, through MLflow's own client: the tracked applies of a store, and one apply's
curves by training step (what ``dsl ui`` draws on a past run's page). :mod:`sdk.tracking` writes the runs: a parent
run tagged ``dsl.run_id`` (the event log's id) per apply, a nested run per step tagged ``dsl.step``, whose
``dsl.curves`` tag names the metrics that are curves (the others are the step's figures).

Which stores: the recipe's tracking URI (or ``MLFLOW_TRACKING_URI``) when it names one, then the workdir's own store
(where a run lands when the server did not take it), each only when it exists or answers. ``mlflow`` is imported
only when a store exists; the MLflow client of each store is kept for the life of the process, and a run found in
a store is kept too (a finished apply's record does not change)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Optional

from sdk import events as EV
from sdk.tracking import local_store, local_uri, quiet_mlflow, reachable, shown_uri

_LOCK = threading.Lock()
_CLIENTS: dict[str, Any] = {}
_FOUND: dict[tuple[str, str], dict[str, Any]] = {}  # (uri, apply run id) -> what run_curves returns
_KEEP = 256


def store_uris(spec: Any, workdir: "str | Path") -> list[str]:
    """The stores an apply of this recipe may be recorded in, in the order to look: the recipe's ``tracking`` URI
    (else ``MLFLOW_TRACKING_URI``), then the workdir's own store when it exists. Reading ignores ``tracking = off``
    and ``DSL_TRACKING``: they stop new records, not the reading of old ones."""
    uris = []
    chosen = getattr(spec, "tracking", None) or os.environ.get("MLFLOW_TRACKING_URI")
    if chosen and chosen not in ("local", "off"):
        uris.append(str(chosen))
    if (local_store(workdir) / "mlflow.db").is_file():
        uris.append(local_uri(workdir))
    return list(dict.fromkeys(uris))


def _client(uri: str) -> Any:
    with _LOCK:
        if uri not in _CLIENTS:
            from mlflow.tracking import MlflowClient

            _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
        return _CLIENTS[uri]


def _curves(client: Any, run_id: str) -> Optional[dict[str, Any]]:
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        return None
    parents = [r for r in client.search_runs(exps, filter_string=f"tags.`dsl.run_id` = '{run_id}'", max_results=10)
               if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        return None
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id], max_results=1000,
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    if any("dsl.curves" not in c.data.tags for c in children):
        return None  # recorded before the curves were tagged: which metrics are curves is not known
    series: dict[str, dict[str, list[list[float]]]] = {}
    steps = []
    for child in sorted(children, key=lambda c: c.info.start_time or 0):
        sid, tags = child.data.tags.get("dsl.step", child.info.run_name), child.data.tags
        steps.append({"id": sid, "status": tags.get("dsl.status", ""), "fingerprint": tags.get("dsl.fingerprint", ""),
                      "seconds": child.data.metrics.get("seconds"), "error": tags.get("dsl.error")})
        for name in (n for n in tags["dsl.curves"].split(",") if n):
            history = sorted(client.get_metric_history(child.info.run_id, name), key=lambda m: m.step)
            if history:
                series.setdefault(sid, {})[name] = [[int(m.step), float(m.value)] for m in history]
    tags = parent.data.tags
    run = {"domain": tags.get("dsl.domain", ""), "recipe": tags.get("dsl.recipe", ""), "ok": tags.get("dsl.ok") == "true",
           "started": (parent.info.start_time or 0) / 1000 or None, "finished": (parent.info.end_time or 0) / 1000 or None}
    return {"mlflow_run_id": parent.info.run_id, "experiment_id": parent.info.experiment_id, "series": series,
            "run": run, "steps": steps}


def run_curves(uris: list[str], run_id: str) -> Optional[dict[str, Any]]:
    """The curves of apply ``run_id`` from the first store that has it: ``{"series": {step id: {metric: [[training
    step, value], ...]}}, "uri": the store (printable), "mlflow_run_id", "experiment_id", "run": {domain, recipe,
    ok, started, finished}, "steps": [{id, status, fingerprint, seconds, error}, ...]}`` (what the run's page shows
    when its event log is gone); None when no store has it (or none can be read: a store that fails is one that
    does not have the run)."""
    if not EV.RUN_ID.match(run_id or ""):
        return None
    for uri in uris:
        key = (uri, run_id)
        if key in _FOUND:
            return _FOUND[key]
        remote = not uri.startswith(("sqlite:", "file:", "/"))
        if remote and reachable(uri) is not None:  # one short attempt, remembered for a while
            continue
        try:
            with quiet_mlflow(remote=remote):
                found = _curves(_client(uri), run_id)
        except Exception:  # noqa: BLE001, S112 - any failure of a store means the event log draws the curves
            continue
        if found is not None:
            found["uri"] = shown_uri(uri)
            with _LOCK:
                if len(_FOUND) >= _KEEP:
                    _FOUND.pop(next(iter(_FOUND)))
                _FOUND[key] = found
            return found
    return None


def list_runs(workdir: "str | Path", uri: Optional[str] = None, max_results: int = 1000) -> list[dict[str, Any]]:
    """The top-level tracked runs of a store (the workdir's own by default), newest first: ``mlflow_run_id``,
    ``run_id`` (the apply's), ``started``, ``finished``, ``status``, ``steps``, ``workdir`` (where it ran). Empty when
    the store does not exist."""
    uri = uri or local_uri(workdir)
    if uri == local_uri(workdir) and not (local_store(workdir) / "mlflow.db").is_file():
        return []
    with quiet_mlflow(remote=not uri.startswith("sqlite")):
        client = _client(uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(exps, filter_string="tags.`dsl.run_id` != ''", max_results=max_results,
                                  order_by=["attributes.start_time DESC"]) if exps else []
    return [{"mlflow_run_id": r.info.run_id, "run_id": r.data.tags.get("dsl.run_id"),
             "started": r.info.start_time / 1000, "finished": (r.info.end_time or 0) / 1000 or None,
             "status": r.info.status, "steps": [s for s in r.data.tags.get("dsl.steps", "").split(",") if s],
             "experiment_id": r.info.experiment_id, "workdir": r.data.tags.get("dsl.workdir", "")} for r in runs if "mlflow.parentRunId" not in r.data.tags]
