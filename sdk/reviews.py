"""Review decisions on a synth step's rows: an append-only log beside the recipe (expert work is an input, not
cache), ``<recipe folder>/reviews/<domain>/<synth label>.jsonl``, one JSON line per decision::

    {"id": "<row id>", "decision": "accept"|"reject"|"edit", "fields": {"answer": "..."} (edit only),
     "reason": "...", "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}

The last line for an id wins; earlier lines stay as the history. :func:`load` reads the log (a bad line is a
located ``FILE:LINE`` error), :func:`append` adds validated lines under a lock (flock, one write, fsync),
:func:`apply` turns candidates into the rows that go downstream under the block's ``review`` policy, and
:func:`edit_matching` applies one edit to every row a search matches. The synth step reads the log (its fingerprint
includes it), so a changed decision re-runs the step, and only what depends on rows that changed.

Standard library, pydantic and :mod:`sdk.jsonl` only: the spec and the backends may import this module.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sdk.errors import DataError, DslError
from sdk.state import no_link_below

DECISIONS = ("accept", "reject", "edit")
STATUSES = ("pending", "accepted", "rejected", "edited")
STATUS_OF = {"accept": "accepted", "reject": "rejected", "edit": "edited"}
EDITABLE = ("question", "answer", "chosen", "rejected", "prompt")  # the text fields of a candidate row
SEARCHED = ("question", "answer")  # what a search (and a bulk edit) looks at by default
POLICIES = ("none", "optional", "required")
MAX_PATTERN = 1000


class Decision(BaseModel):
    """One line of a decisions log (strict: no coercion, no unknown keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=200)
    decision: Literal["accept", "reject", "edit"]
    fields: Optional[dict[str, str]] = None
    reason: str = Field(default="", max_length=10_000)
    reviewer: str = Field(min_length=1, max_length=200)
    at: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

    @model_validator(mode="after")
    def _fields_for_edits(self) -> "Decision":
        if self.decision == "edit":
            if not self.fields:
                raise ValueError("an edit needs fields: the edited text, e.g. {\"answer\": \"...\"}")
            stray = sorted(set(self.fields) - set(EDITABLE))
            if stray:
                raise ValueError(f"fields {', '.join(stray)} cannot be edited (editable: {', '.join(EDITABLE)})")
        elif self.fields:
            raise ValueError(f"fields are for edits only, not for {self.decision}")
        if not self.reviewer.strip():
            raise ValueError("reviewer is blank")
        return self


def now() -> str:
    """The current UTC time as decisions record it (``2026-12-05T14:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def decisions_path(recipe_path: "str | Path", domain: str, label: str) -> Path:
    """``<recipe folder>/reviews/<domain>/<label>.jsonl``; ``recipe_path`` is the recipe file or its folder."""
    p = Path(recipe_path)
    folder = p if p.is_dir() else p.parent
    label = label.removeprefix("synth.")
    for name, value in (("domain", domain), ("label", label)):
        if not value or "/" in value or "\\" in value or value.startswith("."):
            raise DslError(f"{name} {value!r} cannot name a decisions file")
    return folder / "reviews" / domain / f"{label}.jsonl"


def _problem(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def check(entry: Any, shown: str = "decision", line: Optional[int] = None) -> dict[str, Any]:
    """A decision as a plain dict, validated; a DataError (at ``shown:line``) when it is not one."""
    if not isinstance(entry, dict):
        raise DataError(shown, line, f"expected a JSON object, found {type(entry).__name__}")
    try:
        return Decision.model_validate(entry).model_dump(exclude_none=True)
    except ValidationError as e:
        raise DataError(shown, line, f"not a review decision: {_problem(e)}",
                        "one line per decision: {\"id\", \"decision\": accept|reject|edit, \"fields\" (edit only), "
                        "\"reason\", \"reviewer\", \"at\"}") from None


def load(path: "str | Path", shown: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """id -> the last decision for it; an empty dict when the file does not exist."""
    from sdk.jsonl import read_jsonl

    path = Path(path)
    if not path.exists():
        return {}
    shown = shown or str(path)
    if path.is_symlink() or not path.is_file():
        raise DataError(shown, None, "a decisions log must be a plain file (not a link or a folder)")
    no_link_below(path.parents[min(2, len(path.parents) - 1)], path)  # reviews/<domain>/: no link out either
    out: dict[str, dict[str, Any]] = {}
    for n, obj in read_jsonl(path, shown, objects=False):
        entry = check(obj, shown, n)
        out[entry["id"]] = entry
    return out


def history(path: "str | Path") -> list[dict[str, Any]]:
    """Every decision of the log in order (validated like :func:`load`)."""
    from sdk.jsonl import read_jsonl

    path = Path(path)
    return [check(obj, str(path), n) for n, obj in read_jsonl(path, objects=False)] if path.is_file() else []


def append(path: "str | Path", entries: list[dict[str, Any]]) -> int:
    """Validate every entry, then append them all under an exclusive lock in one write, and fsync; a bad entry
    writes nothing. Returns how many lines were written."""
    import fcntl
    import json

    checked = [check(e, "decision", None) for e in entries]
    if not checked:
        return 0
    path = Path(path)
    if path.is_symlink():
        raise DslError(f"{path} is a symbolic link: a decisions log is never written through a link")
    no_link_below(path.parents[min(2, len(path.parents) - 1)], path)  # reviews/<domain>/: no link out either
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in checked)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:  # a hand-edited log may lack its last newline: never glue two decisions on one line
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                text = "\n" + text
        data = text.encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return len(checked)


def status(decision: Optional[dict[str, Any]]) -> str:
    """pending, accepted, rejected or edited."""
    return STATUS_OF[decision["decision"]] if decision else "pending"


def edited(row: dict[str, Any], decision: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The row with an edit's fields applied (a copy; the row itself when there is no edit)."""
    if decision and decision.get("decision") == "edit":
        return {**row, **(decision.get("fields") or {})}
    return row


def apply(rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]],
          policy: str = "optional") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped) under the block's ``review`` policy.

    ``none`` and ``optional``: rejected rows are dropped (reason ``review_rejected``), edits applied, the rest kept.
    ``required``: only accepted and edited rows are kept; rejected ones are dropped as ``review_rejected`` and the
    undecided ones as ``review_pending``. Dropped entries have the ledger's shape (id, reason, detail)."""
    if policy not in POLICIES:
        raise DslError(f"review policy {policy!r} is not one of {', '.join(POLICIES)}")
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for row in rows:
        d = decisions.get(str(row.get("id")))
        if d and d["decision"] == "reject":
            why = f"rejected by {d['reviewer']} at {d['at']}" + (f": {d['reason']}" if d.get("reason") else "")
            dropped.append({"id": row.get("id"), "reason": "review_rejected", "detail": why})
        elif d is None and policy == "required":
            dropped.append({"id": row.get("id"), "reason": "review_pending",
                            "detail": "no review decision yet (review = required)"})
        else:
            kept.append(edited(row, d))
    return kept, dropped


def counts(rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many rows are pending, accepted, rejected and edited."""
    out = dict.fromkeys(STATUSES, 0)
    for row in rows:
        out[status(decisions.get(str(row.get("id"))))] += 1
    return out


def matcher(search: str, regex: bool = False) -> "re.Pattern[str]":
    """The compiled search (a literal substring unless ``regex``; case-insensitive); a DslError on a bad
    pattern."""
    if not search:
        raise DslError("the search is empty: a bulk edit needs text (or a regular expression) to match")
    if len(search) > MAX_PATTERN:
        raise DslError(f"the search is longer than {MAX_PATTERN} characters")
    try:
        return re.compile(search if regex else re.escape(search), re.IGNORECASE)
    except re.error as e:
        raise DslError(f"the search is not a valid regular expression: {e}") from None


def matching(rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]], search: str, regex: bool = False,
             fields: tuple[str, ...] = SEARCHED) -> list[dict[str, Any]]:
    """The rows (as currently edited) whose ``fields`` the search matches."""
    pattern = matcher(search, regex)
    out = []
    for row in rows:
        current = edited(row, decisions.get(str(row.get("id"))))
        if any(isinstance(current.get(f), str) and pattern.search(current[f]) for f in fields):
            out.append(row)
    return out


def edit_matching(rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]], search: str, replacement: str,
                  *, reviewer: str, reason: str = "", regex: bool = False, fields: tuple[str, ...] = SEARCHED,
                  at: Optional[str] = None) -> list[dict[str, Any]]:
    """One edit applied to every row the search matches: each match in ``fields`` of the row as currently edited
    is replaced by ``replacement`` (with ``regex``, ``\\1`` and ``\\g<name>`` refer to groups). Returns the new
    decisions, one edit per row that changed, all with the same reason, reviewer and time (append them with
    :func:`append`). A row already rejected stays rejected."""
    pattern = matcher(search, regex)
    stray = sorted(set(fields) - set(EDITABLE))
    if stray:
        raise DslError(f"fields {', '.join(stray)} cannot be edited (editable: {', '.join(EDITABLE)})")
    at = at or now()
    out = []
    for row in rows:
        d = decisions.get(str(row.get("id")))
        if d and d["decision"] == "reject":
            continue
        current = edited(row, d)
        new = dict((d or {}).get("fields") or {}) if d and d["decision"] == "edit" else {}
        touched = False
        for f in fields:
            value = current.get(f)
            if not isinstance(value, str):
                continue
            try:
                changed = pattern.sub(replacement if regex else (lambda m: replacement), value)
            except (re.error, IndexError) as e:
                raise DslError(f"the replacement does not fit the search: {e}") from None
            if changed != value:
                new[f], touched = changed, True
        if touched:
            out.append(check({"id": str(row["id"]), "decision": "edit", "fields": new, "reason": reason,
                              "reviewer": reviewer, "at": at}))
    return out


def read_candidates(path: "str | Path", shown: Optional[str] = None) -> list[dict[str, Any]]:
    """The rows of a synth artifact's ``candidates.jsonl`` (each must carry a string id)."""
    from sdk.jsonl import read_jsonl

    path = Path(path)
    shown = shown or str(path)
    if not path.is_file():
        raise DslError(f"{shown} is missing: the synth step wrote no candidates (run dsl apply)")
    rows = []
    for n, row in read_jsonl(path, shown):
        if not isinstance(row.get("id"), str) or not row["id"]:
            raise DataError(shown, n, "a candidate row has no string id")
        rows.append(row)
    return rows
