"""A plan is a value: steps with an action, a fingerprint and a reason. It prints like Terraform and
round-trips through JSON, so it can be saved and checked for staleness before it is applied."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class Action(str, Enum):
    CREATE = "create"
    REPLACE = "replace"
    NOOP = "noop"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return {"create": "+", "replace": "~", "noop": "=", "delete": "-"}[self.value]


@dataclass
class Step:
    id: str
    kind: str
    label: str
    backend: str
    backend_version: str
    action: Action
    fingerprint: str
    depends_on: list[str]
    reason: str
    changes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path (relative to the recipe) -> sha256
    inputs: dict[str, str] = field(default_factory=dict)  # dependency -> digest of the outputs it reads

    def to_json(self, full: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "kind": self.kind,
            "backend": self.backend,
            "action": self.action.value,
            "fingerprint": self.fingerprint,
            "depends_on": list(self.depends_on),
            "reason": self.reason,
            "changes": list(self.changes),
        }
        if full:
            out.update(label=self.label, backend_version=self.backend_version, config=self.config, files=self.files,
                       inputs=self.inputs)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Step":
        d = dict(d)
        d["action"] = Action(d["action"])
        kind, _, label = d["id"].partition(".")
        d.setdefault("label", label)
        d.setdefault("backend_version", "")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Plan:
    domain: str
    steps: list[Step]
    serial: int = 0  # serial of the state this plan was made against
    lineage: Optional[str] = None

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    @property
    def pending(self) -> list[Step]:
        return [s for s in self.steps if s.action is not Action.NOOP]

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for s in self.steps:
            out[s.action.value] += 1
        return out

    def to_json(self, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain, "steps": [s.to_json(full) for s in self.steps]}
        if full:
            out.update(serial=self.serial, lineage=self.lineage)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(full=True), indent=2, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> "Plan":
        d = json.loads(text)
        return cls(d["domain"], [Step.from_json(s) for s in d["steps"]], d.get("serial", 0), d.get("lineage"))

    def render(self, color: bool = False) -> str:
        """Terraform-like text: one line per step, its reason and changes under it, then a summary."""
        colors = {"create": "green", "replace": "yellow", "noop": "dim", "delete": "red"}
        lines: list[str] = []
        for s in self.steps:
            sym = s.action.symbol
            head = f"  {sym} {s.id}  ({s.backend})  {s.fingerprint[:12]}"
            if color:
                head = f"[{colors[s.action.value]}]{head}[/]"
            lines.append(head)
            lines.append(f"      {s.reason}")
            for c in s.changes:
                lines.append(f"        {c}")
        c = self.counts()
        summary = (f"Plan: {c['create']} to create, {c['replace']} to replace, {c['delete']} to delete, "
                   f"{c['noop']} up to date.")
        if not self.pending:
            summary = f"No changes. {c['noop']} steps up to date."
        return "\n".join(lines + ["", summary])
