"""An eval's result: ``summary.json``, written by the eval step (:func:`sdk.report.write_report`) and read by
``dsl report``, the apply summary and the web app, each through :func:`save_eval` / :func:`load_eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from sdk.errors import DslError
from sdk.records.files import parse_json, read_text_nofollow, validate

SUMMARY_JSON = "summary.json"


class GateVerdict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    expression: str
    passed: bool
    detail: str = ""
    pending: bool = False


class EvalResult(BaseModel):
    """The figures of one eval: per system and metric a cell ``{value, ci_low, ci_high, n, p_value?}``, the
    paired comparisons against the first system, contamination, the gate's verdict and where the best system
    missed. ``extra="allow"``: an eval feature (expert grades, routing decisions) adds its own section, which the
    report prints when it knows it and keeps otherwise."""

    model_config = ConfigDict(extra="allow", strict=True)

    step: str
    task: str
    n_items: int = Field(ge=0)
    systems: list[str]
    metrics: dict[str, dict[str, dict[str, Any]]]
    comparisons: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    contamination: dict[str, Any] = Field(default_factory=dict)
    bootstrap: Optional[int] = None
    confidence: float = 0.95
    seed: Optional[int] = None
    routing: Optional[dict[str, Any]] = None
    gate: Optional[GateVerdict] = None
    misses: Optional[dict[str, Any]] = None


def save_eval(summary: dict[str, Any], folder: Path) -> Path:
    """Write ``summary.json`` as the eval made it (checked first: a summary that would not load is never written)."""
    path = Path(folder) / SUMMARY_JSON
    EvalResult.model_validate(summary)
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path


def load_eval(path: Path, step_id: str = "eval") -> dict[str, Any]:
    """``summary.json`` validated, as the dict the report and the web app read: a missing, truncated or damaged
    one is a DslError naming the file (and the field)."""
    what, hint = f"the result of {step_id} ({SUMMARY_JSON})", f"run dsl apply --replace {step_id}"
    try:
        text = read_text_nofollow(Path(path), follow=True)  # a regular file only (never a FIFO)
    except (OSError, UnicodeDecodeError) as e:
        raise DslError(f"{path}: {what} is {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}; "
                       f"{hint}") from None
    data = parse_json(text, path, what, hint)
    validate(EvalResult, data, path, what, hint)
    return data
