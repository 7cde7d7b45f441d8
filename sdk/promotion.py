"""Promotion is state: a gate decides which systems are served.

A system (a model or a rag step) is promoted when its step is applied and every gate that names it passed; a
system named by a failed gate is withheld, and so is one whose last run failed or that was never applied. A
gate that reads human grades still missing is pending: the apply goes on, but the system it names is withheld
("gate of eval.x pending: awaiting 37 of 60 grades") until the grades decide it, never promoted on a gate nobody
evaluated. A system no gate names is promoted by being applied (no gate, no guard). ``dsl serve`` exposes promoted systems
only; ``dsl status`` shows each system's promotion and the eval that decided it.
"""

from __future__ import annotations

from typing import Any

from sdk import expr as E
from sdk.records.state import Status
from sdk.spec import kinds as K


def gate_systems(gate_text: Any) -> list[str]:
    if not isinstance(gate_text, str) or not gate_text:
        return []
    try:
        return sorted({m.system for m in E.metrics(E.parse(gate_text))})
    except E.ExprSyntaxError:
        return []


def pending(entry: dict[str, Any]) -> str | None:
    """``awaiting 37 of 60 grades`` when a recorded eval's gate waits on human grades, else None."""
    if entry.get("status") != Status.DONE.value or not str(entry.get("summary", "")).endswith("gate pending"):
        return None
    human = (entry.get("metrics") or {}).get("human") or {}
    return str(human.get("status") or "awaiting grades")


def verdicts(entries: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, bool, str]]]:
    """system -> [(eval step, passed, detail)] from the recorded steps of every kind declared to evaluate systems
    (``evaluates=True``: the built-in eval, or a plugin's), as state entries or manifests; a pending gate is not
    passed, its detail starts with ``pending:``."""
    out: dict[str, list[tuple[str, bool, str]]] = {}
    for step_id, entry in sorted(entries.items()):
        if not K.evaluates(step_id) or entry.get("status") not in Status.finished():  # declared, not named
            continue
        waiting = pending(entry)
        passed = entry.get("status") != Status.GATE_FAILED.value and waiting is None
        detail = (f"pending: {waiting}" if waiting else "gate passed" if passed
                  else (entry.get("error") or "gate failed"))
        for system in gate_systems((entry.get("config") or {}).get("gate")):
            out.setdefault(system, []).append((step_id, passed, detail))
    return out


def promotion(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """system id -> {"promoted": bool, "reason": str, "decided_by": [eval step ids]} for every system step."""
    by_system = verdicts(entries)
    out: dict[str, dict[str, Any]] = {}
    for step_id, entry in sorted(entries.items()):
        kind = step_id.partition(".")[0]
        if kind not in K.kind_names() or not K.get_kind(kind).is_system:
            continue
        decided = by_system.get(step_id, [])
        failed = [(e, d) for e, ok, d in decided if not ok and not d.startswith("pending:")]
        waiting = [(e, d) for e, ok, d in decided if not ok and d.startswith("pending:")]
        if entry.get("status") not in Status.finished():
            out[step_id] = {"promoted": False, "reason": f"its last run failed: {entry.get('error', '')}".strip(),
                            "decided_by": []}
        elif failed:
            out[step_id] = {"promoted": False, "reason": f"gate of {failed[0][0]} failed",
                            "decided_by": [e for e, _ in failed]}
        elif waiting:
            out[step_id] = {"promoted": False, "pending": True,
                            "reason": "; ".join(f"gate of {e} {d}" for e, d in waiting),
                            "decided_by": [e for e, _ in waiting]}
        elif decided:
            out[step_id] = {"promoted": True, "reason": f"gate of {', '.join(e for e, _, _ in decided)} passed",
                            "decided_by": [e for e, _, _ in decided]}
        else:
            out[step_id] = {"promoted": True, "reason": "applied; no gate names it", "decided_by": []}
    return out


def withheld(entries: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {s: p["reason"] for s, p in promotion(entries).items() if not p["promoted"]}
