"""What the plan and runs pages show, computed from the recipe, the state and the apply event log (the same calls
``dsl plan`` and ``dsl status`` make). Plain dicts for the templates; nothing here renders HTML but the charts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from sdk import events as EV
from sdk.records.state import Status
from sdk.ui import svg

STATE_COLORS = {"up to date": "#d9f2d9", "to create": "#dde8fb", "to replace": "#fdf0c8", "to delete": "#eee",
                "failed": "#f8d0d0", "gate failed": "#f8d0d0", "not promoted": "#f3dcc4"}


class NotFound(KeyError):
    """An unknown step, run, eval or item: the page answers 404 with this message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def when(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def step_state(action: str, entry: dict[str, Any], promo: Optional[dict[str, Any]]) -> str:
    """The one word a step's box shows: up to date, to create, to replace, failed, gate failed, not promoted."""
    status = entry.get("status")
    if status == Status.FAILED.value:
        return "failed"
    if status == Status.GATE_FAILED.value:
        return "gate failed"
    if action == "noop":
        return "not promoted" if promo is not None and not promo["promoted"] else "up to date"
    return {"create": "to create", "replace": "to replace", "delete": "to delete"}.get(action, action)


def plan_view(ws: Any) -> dict[str, Any]:
    """The plan page: each step with its state, why it would (re-)run, its inputs and artifact, and the graph."""
    from sdk.planner import plan
    from sdk.promotion import promotion

    the_plan = plan(ws.spec, ws.state, skip_checks=True)
    promoted = promotion(ws.state.steps)
    rows = []
    for s in the_plan.steps:
        entry = ws.state.steps.get(s.id, {})
        state = step_state(s.action.value, entry, promoted.get(s.id))
        rows.append({"id": s.id, "kind": s.kind, "backend": s.backend, "action": s.action.value, "state": state,
                     "color": STATE_COLORS.get(state, "#eee"), "reason": s.reason, "changes": list(s.changes),
                     "depends_on": list(s.depends_on), "artifact": entry.get("artifact"),
                     "fingerprint": s.fingerprint[:12], "summary": entry.get("summary", ""),
                     "error": entry.get("error"), "promotion": promoted.get(s.id)})
    counts = the_plan.counts()
    return {"rows": rows, "graph": svg.graph(rows), "counts": counts, "applied": bool(ws.state.steps),
            "pending": len(the_plan.pending)}


def step_view(ws: Any, step_id: str) -> dict[str, Any]:
    view = plan_view(ws)
    row = next((r for r in view["rows"] if r["id"] == step_id), None)
    if row is None:
        raise NotFound(f"no step {step_id!r} in this recipe (steps: {', '.join(r['id'] for r in view['rows'])})")
    entry = ws.state.steps.get(step_id, {})
    return {**row, "entry_status": entry.get("status", "not applied"), "config": json.dumps(entry.get("config", {}),
            indent=2, sort_keys=True, default=str) if entry else "", "files": entry.get("files", {}),
            "lineage": entry.get("lineage", {}), "metrics": json.dumps(entry.get("metrics", {}), indent=2,
                                                                         default=str)[:20000] if entry else "",
            "drift": ws.drift(step_id), "dependents": [r["id"] for r in view["rows"] if step_id in r["depends_on"]]}


# ----------------------------------------------------------------------------------------------------- runs


def runs_view(workdir: Path, limit: Optional[int] = None) -> dict[str, Any]:
    rows = EV.list_runs(workdir, limit=limit)
    for r in rows:
        r["started_at"] = when(r.get("started"))
        end = r.get("finished")
        r["seconds"] = f"{end - r['started']:.1f}" if isinstance(end, (int, float)) and r.get("started") else ""
    return {"runs": rows, "running": any(r.get("status") == "running" for r in rows)}


def tracked_only_view(workdir: Path, stores: list[str]) -> dict[str, Any]:
    """The runs of this workdir a tracking store recorded whose event log is gone, newest first (read apart from
    the runs table, which stays fast: MLflow's client takes a moment)."""
    from sdk.tracking import reachable, shown_uri
    from sdk.tracking_store import list_runs

    rows, seen, here = [], set(), str(Path(workdir).resolve())
    for uri in stores:
        if reachable(uri) is not None:  # only an http(s) store is asked; one short attempt, remembered
            continue
        try:
            found = list_runs(workdir, uri)
        except Exception:  # noqa: BLE001, S112 - a store that fails lists nothing
            continue
        for r in found:
            rid = r.get("run_id") or ""
            if rid in seen or not EV.RUN_ID.match(rid) or EV.log_path(workdir, rid).is_file() or \
                    (r.get("workdir") and r["workdir"] != here):
                continue
            seen.add(rid)
            rows.append({"run_id": rid, "started_at": when(r.get("started")), "store": shown_uri(uri),
                         "status": "succeeded" if r.get("status") == "FINISHED" else "failed", "steps": r["steps"]})
    return {"tracked": sorted(rows, key=lambda r: r["run_id"], reverse=True)}


def run_view(workdir: Path, run_id: str, stores: Optional[list[str]] = None) -> dict[str, Any]:
    """One run from its event log: its plan, each step's progress; ``live`` while it runs. Its curves: from the
    tracking store (``stores``, MLflow's client) once it ended and was recorded there, else from the event log (a
    live run, a run tracking did not record); ``source`` says which. A run whose event log is gone is shown as the
    tracking store recorded it (``no_event_log``)."""
    try:
        events, _ = EV.read_events(workdir, run_id)
    except EV.UnknownRun as e:
        stored = _stored_run(run_id, stores or [])
        if stored is None:
            raise NotFound(str(e) + (" nor in the tracking store" if stores and EV.RUN_ID.match(run_id) else "")) \
                from None
        return stored
    if not events or events[0]["event"] != "run_started":
        raise NotFound(f"the event log of run {run_id} is empty or damaged")
    head = events[0]["data"]
    steps: dict[str, dict[str, Any]] = {p["id"]: {"id": p["id"], "action": p.get("action"), "reason": p.get("reason"),
                                                  "status": "waiting" if p.get("action") != "noop" else "up to date",
                                                  "seconds": "", "fingerprint": "", "summary": "", "error": None}
                                        for p in head.get("plan", []) if isinstance(p, dict) and "id" in p}
    finished = None
    for e in events[1:]:
        d, sid = e["data"], e.get("step")
        if e["event"] == "step_started" and sid:
            steps.setdefault(sid, {"id": sid, "action": d.get("action"), "reason": d.get("reason"), "seconds": "",
                                   "fingerprint": "", "summary": "", "error": None})["status"] = "running"
            steps[sid]["config"] = d.get("config")
        elif e["event"] == "step_finished" and sid in steps:
            steps[sid].update(status=d.get("status"), seconds=d.get("seconds"), fingerprint=d.get("fingerprint") or "",
                              summary=d.get("summary") or "", error=d.get("error"), metrics=d.get("metrics") or {})
        elif e["event"] == "run_finished":
            finished = e
    status = ("succeeded" if finished["data"].get("ok") else "failed") if finished else \
        next((r["status"] for r in EV.list_runs(workdir) if r["run_id"] == run_id), "running")
    live = finished is None and status == "running"
    series, source = _curves(workdir, run_id, [] if live else (stores or []), live)
    charts = _charts(series)
    return {"run_id": run_id, "recipe": head.get("recipe"), "domain": head.get("domain"),
            "started_at": when(events[0].get("time")), "finished_at": when(finished["time"]) if finished else "",
            "status": status, "live": live, "steps": list(steps.values()), "charts": charts, "series": series,
            "source": source, "events": len(events), "no_event_log": False}


def _charts(series: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"step": sid, "svg": svg.curves(by_name, title=f"{sid}: {', '.join(by_name)}"), "series": by_name,
             "last": {k: v[-1][1] for k, v in by_name.items() if v}} for sid, by_name in series.items()]


def _stored_run(run_id: str, stores: list[str]) -> Optional[dict[str, Any]]:
    """A past run whose event log is gone (a cleaned workdir, a run recorded on a team's server), as the tracking
    store recorded it: its steps, their status and wall time, its curves. None when no store has it."""
    from sdk.tracking_store import run_curves

    tracked = run_curves(stores, run_id) if stores else None
    if tracked is None:
        return None
    head = tracked["run"]
    steps = [{"id": s["id"], "action": None, "reason": None, "status": s["status"], "summary": "",
              "seconds": "" if s["seconds"] is None else round(s["seconds"], 3), "fingerprint": s["fingerprint"],
              "error": s["error"]} for s in tracked["steps"]]
    series = tracked["series"]
    charts = _charts(series)
    return {"run_id": run_id, "recipe": head["recipe"], "domain": head["domain"], "started_at": when(head["started"]),
            "finished_at": when(head["finished"]), "status": "succeeded" if head["ok"] else "failed", "live": False,
            "steps": steps, "charts": charts, "series": series, "events": 0, "no_event_log": True,
            "source": {"kind": "mlflow", "uri": tracked["uri"], "mlflow_run": tracked["mlflow_run_id"]}}


def _curves(workdir: Path, run_id: str, stores: list[str], live: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's curves and where they come from: the tracking store that recorded the run, else its event log."""
    if stores:
        from sdk.tracking_store import run_curves

        tracked = run_curves(stores, run_id)
        if tracked is not None:
            return tracked["series"], {"kind": "mlflow", "uri": tracked["uri"], "mlflow_run": tracked["mlflow_run_id"]}
    why = "the run is live; the tracking store records it when the apply ends" if live else \
        "this run is not in the tracking store" if stores else "there is no tracking store"
    return EV.metric_series(workdir, run_id), {"kind": "events", "why": why}


def _manifest(workdir: Path, step_id: str, fingerprint: str) -> Optional[dict[str, Any]]:
    if not fingerprint or "/" in fingerprint or "/" in step_id or ".." in step_id + fingerprint:
        return None
    path = workdir / "artifacts" / step_id / fingerprint / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recorded(step: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A step's configuration and figures as its run's event log recorded them (None for older logs)."""
    if step.get("config") is None:
        return None
    return {"config": step["config"], "metrics": step.get("metrics") or {}}


def compare_view(workdir: Path, a: str, b: str, stores: Optional[list[str]] = None) -> dict[str, Any]:
    """Two runs side by side: per step, the fingerprints, the configuration diff (from the artifacts' manifests)
    and the metric deltas (last value of each curve, from where each run's page draws it, and each step's recorded
    figures)."""
    from sdk.diffs import diff
    from sdk.tracking import numbers_of

    runs = [run_view(workdir, a, stores), run_view(workdir, b, stores)]
    series = [runs[0]["series"], runs[1]["series"]]
    by_id = [{s["id"]: s for s in r["steps"]} for r in runs]
    rows = []
    for sid in dict.fromkeys([*by_id[0], *by_id[1]]):
        none = {"status": "", "fingerprint": "", "reason": ""}
        sa, sb = by_id[0].get(sid, none), by_id[1].get(sid, none)
        # each run's own record (its event log) first: the artifact of an older run is gone once a newer replaced it
        ma = _recorded(sa) or _manifest(workdir, sid, sa.get("fingerprint", "")) or {}
        mb = _recorded(sb) or _manifest(workdir, sid, sb.get("fingerprint", "")) or {}
        changes = diff(ma.get("config"), mb.get("config")) if ma and mb else []
        figures_a = {**numbers_of(ma.get("metrics")), **{k: v[-1][1] for k, v in series[0].get(sid, {}).items() if v}}
        figures_b = {**numbers_of(mb.get("metrics")), **{k: v[-1][1] for k, v in series[1].get(sid, {}).items() if v}}
        metrics = [{"name": k, "a": figures_a.get(k), "b": figures_b.get(k),
                    "delta": (figures_b[k] - figures_a[k]) if k in figures_a and k in figures_b else None}
                   for k in sorted(set(figures_a) | set(figures_b))]
        rows.append({"id": sid, "a": sa, "b": sb, "changes": changes, "metrics": metrics,
                     "config_known": bool(ma and mb),
                     "same": bool(sa.get("fingerprint")) and sa.get("fingerprint") == sb.get("fingerprint")})
    return {"a": runs[0], "b": runs[1], "rows": rows}
