"""The router as a system of an eval (``systems = [rag.tuned, route.default, ...]``): each item is answered by the
system the router sends it to, as the gateway's ``model="auto"`` does, and the routing decision (target, system,
probability) is kept with the answer, so the report shows where each question went.

The router and its targets are opened from the route step's applied manifest (the targets it recorded, the
artifacts it was applied with). A target that the same eval also lists, from the same artifact, is not asked
again: its saved answer is the routed answer (greedy decoding gives the same answer twice).
"""

from __future__ import annotations

from typing import Any

from sdk.artifacts import Artifact
from sdk.backends.eval.answers import Answer, Prompter, SystemRunner
from sdk.evalsets import EvalItem
from sdk.spec import Endpoint, parse_ref
from sdk.systems import applied_block, input_artifact, open_system, serving_of


def is_router(system: Any) -> bool:
    """A system served as ``auto`` (its kind's declaration says ``serving="router"``)."""
    return serving_of(system) == "router"


def routing_of(saved: dict[str, Any]) -> dict[str, Any] | None:
    """The routing decision kept with a saved answer (None for every system but a router)."""
    return saved.get("routing")


class RoutedRunner:
    """Answers items through a route step's router: each by the system it routes the item to."""

    batched = True  # items are routed together; each target then answers its share as it answers best

    def __init__(self, spec: Any, system: Any, artifacts: dict[str, Artifact], labels: list[str], task: str,
                 prompter: Prompter, answered: dict[str, dict[str, dict[str, Any]]] | None = None) -> None:
        self.spec, self.labels, self.task, self.prompter = spec, labels, task, prompter
        self.route_art = artifacts[str(system)]
        self.router = open_system(self.route_art)  # the router its kind's opener loads from the route step's artifact
        self.applied = applied_block(self.route_art)
        self.artifacts = artifacts
        self.answered = answered or {}
        self.runners: dict[str, SystemRunner] = {}

    def _target(self, sid: str) -> tuple[Any, dict[str, Artifact]]:
        """The system a target id names (a Ref, or the general endpoint) and the artifacts to open it from."""
        if sid.startswith("endpoint:") and isinstance(self.applied.general, Endpoint):
            return self.applied.general, {}
        return parse_ref(sid), {sid: input_artifact(self.route_art, sid)}

    def _reusable(self, sid: str, item_id: str) -> dict[str, Any] | None:
        """The answer this eval already saved for the target, when it answered from the very artifact routed to."""
        saved = self.answered.get(sid, {}).get(item_id)
        own = self.artifacts.get(sid)
        if saved is None or own is None:
            return None
        try:
            same = input_artifact(self.route_art, sid).path == own.path
        except Exception:  # noqa: BLE001 - not recorded: answer afresh
            same = False
        return saved if same else None

    def answer_many(self, items: list[EvalItem], max_new_tokens: int, want_nll: bool, batch: int = 16) -> list[Answer]:
        decisions = self.router.route_many([it.question for it in items])
        out: list[Answer | None] = [None] * len(items)
        pending: dict[str, list[int]] = {}
        for i, (item, d) in enumerate(zip(items, decisions)):
            sid = str(d["system"])
            saved = self._reusable(sid, item.id)
            if saved is not None:
                out[i] = Answer(saved["prediction"], saved["sources"], saved["retrieved"],
                                tuple(saved["nll"]) if saved.get("nll") else None,  # type: ignore[arg-type]
                                saved.get("evidence"))
            else:
                pending.setdefault(sid, []).append(i)
        for sid, idx in pending.items():
            if sid not in self.runners:
                system, arts = self._target(sid)
                self.runners[sid] = SystemRunner(self.spec, system, arts, self.labels, self.task, self.prompter)
            for i, ans in zip(idx, self.runners[sid].answer_many([items[i] for i in idx], max_new_tokens, want_nll,
                                                                batch)):
                out[i] = ans
        for ans, d in zip(out, decisions):
            ans.routing = {"target": d["target"], "system": str(d["system"]),  # type: ignore[union-attr]
                           "probability": round(float(d["probability"]), 4)}
        return out  # type: ignore[return-value]


def routing_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a router sent the eval's items: count and exact-match-style correctness per system."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        routing = r.get("routing") or {}
        cell = by.setdefault(str(routing.get("system")), {"target": routing.get("target"), "items": 0, "correct": 0})
        cell["items"] += 1
        cell["correct"] += 1 if r.get("correct") else 0
    return {"n_items": len(rows), "systems": by}
