"""A finished step's output folder and its manifest: what later steps, systems and reports read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Artifact:
    """A finished step's output folder and its manifest (what a later step reads)."""

    step_id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def outputs(self) -> dict[str, Any]:
        return self.manifest.get("outputs", {})
