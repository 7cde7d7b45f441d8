"""An artifact's ``manifest.json``: the applied configuration a finished step wrote beside its output (what later
steps, systems and reports read). :func:`manifest_text` is the one place one is written (by the executor),
:func:`parse_manifest` the one place one is read (by :func:`sdk.integrity.read_manifest`, which adds the link,
size and hash checks).

Manifests stay plain dicts at run time (``art.outputs["model"]``); the model is what they are checked against."""

from __future__ import annotations

import json
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdk.records.files import problems

MANIFEST = "manifest.json"


class Written(BaseModel):
    """One file a step wrote: its size and sha256 (checked by plan and ``dsl verify``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    size: int = Field(ge=0)
    sha256: str


class InputRecord(BaseModel):
    """What an input had produced when the step read it: systems are opened from these, never from the recipe."""

    model_config = ConfigDict(extra="allow", strict=True)

    fingerprint: Optional[str] = None
    artifact: Optional[str] = None
    digest: Optional[str] = None
    manifest_sha256: Optional[str] = None


class Manifest(BaseModel):
    """A finished step's record: the state entry's fields (but its artifact path), its declared ``outputs``, every
    file it ``written``, the ``inputs`` it read and its ``facets``.

    ``extra="allow"``: a backend, a plugin's among them, may record more beside what the executor writes, and
    a manifest written by a later release still loads; extra keys are kept as they are. Every field but
    ``outputs`` and ``written`` is optional, so the manifests of earlier releases load too."""

    model_config = ConfigDict(extra="allow", strict=True)

    step: Optional[str] = None
    status: Optional[str] = None
    fingerprint: Optional[str] = None
    backend: Optional[str] = None
    backend_version: Optional[str | int] = None
    config: Optional[dict[str, Any]] = None
    files: Optional[dict[str, Any]] = None
    metrics: Optional[dict[str, Any]] = None
    summary: Optional[str] = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    written: dict[str, Written] = Field(default_factory=dict)
    inputs: dict[str, InputRecord] = Field(default_factory=dict)
    facets: Optional[dict[str, Any]] = None


def manifest_text(manifest: dict[str, Any]) -> str:
    """The text of a manifest the executor writes, checked first (one that would not load is never written). Its
    sha256 is recorded in the step's state entry, so the text is the record."""
    Manifest.model_validate(manifest)
    return json.dumps(manifest, indent=2, sort_keys=True, default=str)


def parse_manifest(raw: bytes) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """A manifest's content, or why it is not one: ``manifest.json is unreadable (...)`` or ``manifest.json is
    damaged (written.model.bin.size: ...)``, naming the field."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    except (RecursionError, ValueError):  # nested thousands deep, or an integer of thousands of digits
        return None, f"{MANIFEST} is unreadable (not a manifest: JSON nested too deep or a number too long)"
    try:
        Manifest.model_validate(data)
    except ValidationError as e:
        return None, f"{MANIFEST} is damaged ({problems(e, limit=1)})"
    return data, None
