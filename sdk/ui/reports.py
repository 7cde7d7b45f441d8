"""What the reports page shows: each applied eval's summary (metrics per system with CIs, paired p-values, the
gate, the misses), its per-item table (filtered and sorted; the promoted system's wrong answers first) and one
item's answers in two applied versions of the eval, side by side. Read from the eval artifacts only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sdk import events as EV
from sdk.records.state import Status
from sdk.spec import kinds as K
from sdk.ui import svg
from sdk.ui.views import NotFound

MAX_ITEMS_SHOWN = 500  # rows of the per-item table on one page (the filter narrows them down)


def evals(ws: Any) -> list[dict[str, Any]]:
    """The applied steps of the kinds declared to evaluate systems (the kinds registry: ``eval``, a plugin's)."""
    out = []
    for sid, entry in sorted(ws.state.steps.items()):
        if K.evaluates(sid) and entry.get("status") in Status.finished():
            out.append({"id": sid, "status": entry["status"], "summary": entry.get("summary", "")})
    return out


def _artifact(ws: Any, eval_id: str) -> Any:
    from sdk.errors import DslError

    if not K.evaluates(eval_id) or eval_id not in ws.state.steps:
        raise NotFound(f"no applied eval {eval_id!r} (applied: {', '.join(e['id'] for e in evals(ws)) or 'none'})")
    try:
        return ws.artifact(eval_id)
    except DslError as e:
        raise NotFound(str(e)) from None


def _summary(folder: Path, eval_id: str) -> dict[str, Any]:
    from sdk.errors import DslError
    from sdk.records.eval import SUMMARY_JSON, load_eval

    if not (folder / SUMMARY_JSON).is_file():
        raise NotFound(f"{eval_id} has no summary.json in {folder} (applied by a test backend?)")
    try:
        return load_eval(folder / SUMMARY_JSON, eval_id)
    except DslError as e:
        raise NotFound(str(e)) from None


def promoted_system(ws: Any, summary: dict[str, Any]) -> Optional[str]:
    from sdk.promotion import promotion

    promoted = promotion(ws.state.steps)
    systems = list(summary.get("systems") or summary["metrics"])
    return next((s for s in systems if promoted.get(s, {}).get("promoted")), systems[0] if systems else None)


def report_view(ws: Any, eval_id: str) -> dict[str, Any]:
    art = _artifact(ws, eval_id)
    summary = _summary(Path(art.path), eval_id)
    results, comparisons = summary["metrics"], summary.get("comparisons", {})
    names = sorted({m for r in results.values() for m in r})
    table, charts = [], []
    for sid, r in results.items():
        cells = []
        for m in names:
            v = r.get(m)
            c = comparisons.get(sid, {}).get(m) or {}
            cells.append(None if not isinstance(v, dict) else
                         {"value": v.get("value"), "low": v.get("ci_low"), "high": v.get("ci_high"),
                          "p": c.get("p_value", v.get("p_value")), "diff": c.get("difference")})
        table.append({"system": sid, "cells": cells})
    for m in names:
        rows = [{"label": sid, "value": r[m].get("value"), "low": r[m].get("ci_low"), "high": r[m].get("ci_high")}
                for sid, r in results.items() if isinstance(r.get(m), dict)]
        charts.append({"metric": m, "svg": svg.bars(rows, title=f"{m} with {summary.get('confidence', 0.95):.0%} CIs")})
    return {"id": eval_id, "summary": summary, "names": names, "table": table, "charts": charts,
            "gate": summary.get("gate"), "misses": summary.get("misses"), "promoted": promoted_system(ws, summary),
            "systems": list(results), "html": (Path(art.path) / "report.html").is_file(),
            "versions": versions(ws, eval_id), "experts": _experts(summary)}


def _experts(summary: dict[str, Any]) -> list[str]:
    """The report's lines on expert grades and the judge's agreement with them (sdk.grades.report_lines)."""
    from sdk.grades import report_lines

    return report_lines(summary.get("human"))


def _predictions(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder/predictions.jsonl`` (or of ``folder`` itself when it is that file)."""
    rows = []
    path = folder if folder.suffix == ".jsonl" else folder / "predictions.jsonl"
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and "id" in r and "system" in r:
                    rows.append(r)
    except OSError:
        pass
    return rows


def wrong(r: dict[str, Any]) -> bool:
    c = r.get("correct")
    return isinstance(c, (int, float)) and c < 1


def items_view(ws: Any, eval_id: str, q: str = "", system: str = "", only_wrong: bool = False,
               sort: str = "promoted") -> dict[str, Any]:
    """The per-item table: ``q`` filters on question, gold answer and prediction; ``sort`` is ``promoted`` (the
    promoted system's wrong answers first), ``item``, ``system`` or ``score`` (lowest first)."""
    art = _artifact(ws, eval_id)
    summary = _summary(Path(art.path), eval_id)
    promoted = promoted_system(ws, summary)
    rows = _predictions(Path(art.path))
    needle = q.strip().lower()
    if needle:
        rows = [r for r in rows if any(needle in str(r.get(k, "")).lower() for k in ("id", "question", "gold", "prediction"))]
    if system:
        rows = [r for r in rows if r["system"] == system]
    if only_wrong:
        rows = [r for r in rows if wrong(r)]
    keys = {"item": lambda r: (str(r["id"]), str(r["system"])),
            "system": lambda r: (str(r["system"]), str(r["id"])),
            "score": lambda r: (float(r["correct"]) if isinstance(r.get("correct"), (int, float)) else 2.0, str(r["id"])),
            "promoted": lambda r: (r["system"] != promoted, not wrong(r), str(r["id"]), str(r["system"]))}
    rows.sort(key=keys.get(sort, keys["promoted"]))
    return {"id": eval_id, "rows": rows[:MAX_ITEMS_SHOWN], "total": len(rows), "promoted": promoted,
            "systems": list(summary["metrics"]), "q": q, "system": system, "only_wrong": only_wrong, "sort": sort}


def versions(ws: Any, eval_id: str, scan: int = 200) -> list[dict[str, Any]]:
    """The versions of an eval whose answers are still known, newest first, each with the run that made it: those
    still in the workdir's artifacts, and the copies older runs kept of theirs (``sdk.events.kept_predictions``)."""
    folder = Path(ws.workdir) / "artifacts" / eval_id
    if not folder.is_dir() or folder.is_symlink():
        return []
    made_by: dict[str, str] = {}
    for run in EV.list_runs(ws.workdir, limit=scan):
        if eval_id in run.get("steps", []):
            try:
                events, _ = EV.read_events(ws.workdir, run["run_id"])
            except EV.UnknownRun:
                continue
            for e in events:
                if e["event"] == "step_finished" and e.get("step") == eval_id and e["data"].get("fingerprint"):
                    made_by.setdefault(e["data"]["fingerprint"], run["run_id"])
    out = []
    for d in folder.iterdir():
        if d.is_dir() and not d.is_symlink() and (d / "predictions.jsonl").is_file():
            out.append({"fingerprint": d.name, "run": made_by.get(d.name, ""), "mtime": d.stat().st_mtime,
                        "current": d.name == (ws.state.steps.get(eval_id) or {}).get("fingerprint"),
                        "file": d / "predictions.jsonl"})
    present = {v["fingerprint"] for v in out}
    for fp, run in made_by.items():
        try:
            kept = EV.kept_predictions(ws.workdir, run, eval_id)
        except EV.UnknownRun:
            continue
        if fp not in present and "/" not in fp and kept.is_file() and not kept.is_symlink():
            out.append({"fingerprint": fp, "run": run, "mtime": kept.stat().st_mtime, "current": False, "file": kept})
    out.sort(key=lambda v: (v["run"], v["mtime"]), reverse=True)
    return out


def item_view(ws: Any, eval_id: str, item_id: str, a: str = "", b: str = "") -> dict[str, Any]:
    """One item's answers by every system in two versions of the eval (``a`` and ``b``: fingerprints; default the
    two newest), side by side."""
    _artifact(ws, eval_id)
    known = versions(ws, eval_id)
    by_fp = {v["fingerprint"]: v for v in known}
    for given in (a, b):
        if given and given not in by_fp:
            raise NotFound(f"{eval_id} has no applied version {given!r} in this workdir")
    picked = [a or (known[0]["fingerprint"] if known else ""), b or (known[1]["fingerprint"] if len(known) > 1 else "")]
    columns = []
    question = gold = None
    for fp in [p for p in picked if p]:
        rows = [r for r in _predictions(by_fp[fp]["file"]) if str(r["id"]) == item_id]
        for r in rows:
            question, gold = r.get("question"), r.get("gold")
        columns.append({**by_fp[fp], "answers": sorted(rows, key=lambda r: str(r["system"]))})
    if question is None and gold is None:
        raise NotFound(f"no item {item_id!r} in {eval_id}")
    return {"id": eval_id, "item": item_id, "question": question, "gold": gold, "columns": columns,
            "versions": known}
