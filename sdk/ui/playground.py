"""The playground: ask a promoted system, or ``auto`` through the router, what ``dsl ask`` and ``dsl route`` use
(every system, model and router opened by its kind's declared opener from its applied artifact).
Opened systems are kept for the life of the page's process."""

from __future__ import annotations

import threading
from typing import Any

from sdk.errors import DslError
from sdk.systems import serving_of

MAX_NEW_TOKENS = 64
AUTO = "auto"


class Playground:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: dict[tuple[str, str], Any] = {}  # (step id, fingerprint) -> system

    @staticmethod
    def choices(ws: Any) -> dict[str, Any]:
        """The systems one may ask (promoted rag and model steps), ``auto`` when a router is applied, and the
        withheld ones with their reason."""
        from sdk.promotion import promotion
        from sdk.records.state import Status

        promoted, held = [], {}
        for sid, p in promotion(ws.state.steps).items():
            if serving_of(sid) not in ("rag", "model", "system"):  # what the kind declares it is served as
                continue
            if p["promoted"]:
                promoted.append(sid)
            else:
                held[sid] = p["reason"]
        routes = [s for s, e in ws.state.steps.items()
                  if serving_of(s) == "router" and e.get("status") == Status.DONE.value]
        return {"systems": ([AUTO] if routes else []) + promoted, "withheld": held, "route": routes[0] if routes else None}

    def _open(self, ws: Any, step_id: str) -> Any:
        art = ws.artifact(step_id)
        key = (step_id, art.path.name)
        with self.lock:
            if key not in self.opened:
                from sdk.systems import open_system

                # every kind through its declared opener, from the applied artifact alone
                self.opened[key] = open_system(art, base_dir=ws.spec.base_dir, spec=ws.spec)
            return self.opened[key]

    def ask(self, ws: Any, system: str, question: str) -> dict[str, Any]:
        """The answer, the sources (cited ones marked), and for ``auto`` the routed target and its probability."""
        question = question.strip()
        if not question:
            raise DslError("write a question first")
        choices = self.choices(ws)
        routing = None
        if system == AUTO:
            if not choices["route"]:
                raise DslError("no router is applied: add a route block and run dsl apply, or pick a system")
            from sdk.systems import open_system

            routing = open_system(ws.artifact(choices["route"])).route(question)
            system = str(routing.get("system"))
        if system in choices["withheld"]:
            raise DslError(f"{system} is withheld from serving: {choices['withheld'][system]}")
        if system not in choices["systems"]:
            raise DslError(f"{system} is not a promoted system of this recipe (ask one of: "
                           f"{', '.join(choices['systems']) or 'none: run dsl apply'})")
        opened = self._open(ws, system)
        out = opened.answer(question, max_new_tokens=MAX_NEW_TOKENS) if serving_of(system) == "model" \
            else opened.answer(question)
        out = out if isinstance(out, dict) else {"answer": out}
        answer, sources, cited = str(out.get("answer") or "").strip(), out.get("sources") or [], out.get("cited") or []
        return {"system": system, "question": question, "answer": answer, "routing": routing, "cited": cited,
                "sources": [{**s, "cited": s["index"] in cited, "where": str(s.get("location") or s.get("source")),
                             "score": float(s.get("score") or 0.0)} for s in sources],
                "drift": ws.drift(system)}
