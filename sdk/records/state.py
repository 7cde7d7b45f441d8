"""The state file ``state.json`` and its entries: one :class:`StateEntry` per applied step, with a
:class:`Status`. :class:`sdk.state.StateStore` loads and saves it through :func:`parse_state` and
:func:`state_text`, the one place either happens.

The entries stay plain dicts at run time (the planner, promotion and the commands read them with ``.get``); the
model is what they are checked against: every entry the executor writes (strictly, before it is saved) and every
entry read from disk (a damaged one is an error naming the file and the field)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from sdk.records.files import parse_json, validate

STATE_VERSION = 2  # 2: artifact paths relative to the workdir; inputs keyed by what they produced (facets)


class Status(str, enum.Enum):
    """A step's last outcome: its artifact is current (done), its eval's gate failed (an artifact, withheld from
    serving), or its last run failed (no artifact of that run)."""

    DONE = "done"
    GATE_FAILED = "gate_failed"
    FAILED = "failed"

    @classmethod
    def finished(cls) -> tuple[str, str]:
        """The statuses whose artifact later steps, systems and reports read."""
        return (cls.DONE.value, cls.GATE_FAILED.value)


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: list[str] = Field(default_factory=list)
    files: dict[str, Any] = Field(default_factory=dict)


class StateEntry(BaseModel):
    """One applied step. Only ``status`` is required: a failed first run records little more. ``extra="allow"``:
    an entry written by a later release (a field this one does not know) still loads, and is saved back as it was."""

    model_config = ConfigDict(extra="allow", strict=True, use_enum_values=True)

    status: Status = Field(strict=False)  # its value, as JSON has it ("done"), and nothing else
    fingerprint: Optional[str] = None
    backend: Optional[str] = None
    backend_version: Optional[str | int] = None  # a plugin's Backend.version may be a number
    config: Optional[dict[str, Any]] = None
    files: Optional[dict[str, Any]] = None
    inputs: Optional[dict[str, Any]] = None
    facets: Optional[dict[str, Any]] = None
    artifact: Optional[str] = None
    metrics: Optional[dict[str, Any]] = None
    summary: Optional[str] = None
    error: Optional[str] = None
    manifest_sha256: Optional[str] = None
    lineage: Optional[Lineage] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    duration_s: Optional[float] = None
    state_version: Optional[int] = None
    failed_fingerprint: Optional[str] = None
    traceback: Optional[str] = None


class StateFile(BaseModel):
    """``state.json``: the workdir's lineage (one id for its life), serial (one more per save), domain, the entry of
    every applied step, and the hash cache of the files steps read (``path -> [size, mtime, sha256]``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1, 2] = STATE_VERSION
    lineage: str
    serial: int = Field(ge=0)
    domain: Optional[str] = None
    steps: dict[str, StateEntry] = Field(default_factory=dict)
    hashes: dict[str, list[Any]] = Field(default_factory=dict)


HINT = "move it away to start afresh"


def parse_state(text: str, path: Path) -> dict[str, Any]:
    """The content of a state file, validated: ``{"version", "lineage", "serial", "domain", "steps", "hashes"}``
    with each entry as the dict it was on disk. Raises DslError naming the file and the first bad field."""
    data = parse_json(text, path, "the state file", HINT)
    if isinstance(data, dict) and "version" in data and data["version"] not in (1, STATE_VERSION):
        from sdk.errors import DslError

        raise DslError(f"{path}: state version {data['version']!r} is not supported (this release reads 1 and "
                       f"{STATE_VERSION})")
    validate(StateFile, data, path, "the state file", HINT)
    return {"version": data.get("version", STATE_VERSION), "lineage": data["lineage"], "serial": data["serial"],
            "domain": data.get("domain"), "steps": data.get("steps") or {}, "hashes": data.get("hashes") or {}}


def entry(**fields: Any) -> dict[str, Any]:
    """A state entry as the executor records it: checked against :class:`StateEntry` (strictly: a wrong type is a
    bug of ours, caught before it reaches the disk), returned as the dict that is saved."""
    StateEntry.model_validate(fields)
    return fields


def state_text(lineage: str, serial: int, domain: Optional[str], steps: dict[str, dict[str, Any]],
               hashes: dict[str, list[Any]]) -> str:
    """The text of ``state.json``, every entry checked first (a state that would not load is never saved)."""
    data = {"version": STATE_VERSION, "lineage": lineage, "serial": serial, "domain": domain, "steps": steps,
            "hashes": hashes}
    StateFile.model_validate(data)
    return json.dumps(data, indent=2, sort_keys=True)
