"""Reading dataset rows (JSONL chat or instruction rows, normalised to messages) and the validation split: shared by
the dataset step and the steps that read a dataset's files themselves (reward)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sdk.errors import DataError
from sdk.jsonl import read_jsonl
from sdk.spec.paths import shown_path as rel  # noqa: F401 - re-exported: how data files are named in messages

ROLES = ("system", "user", "assistant", "tool")
DEFAULT_FIELDS = {"messages": "messages", "instruction": "instruction", "input": "input", "output": "output",
                  "text": "text"}


def read_rows(path: Path, block: Any, shown_as: str | None = None) -> list[dict[str, Any]]:
    """Parse and normalise every row; raise DataError naming the file and line of the first bad one."""
    shown = shown_as or str(path)
    fields = {**DEFAULT_FIELDS, **dict(block.fields)}
    rows: list[dict[str, Any]] = []
    for n, obj in read_jsonl(path, shown):
        rows.append(_normalise(obj, block, fields, shown, n))
    if not rows:
        raise DataError(shown, None, "the dataset has no rows")
    return rows


def _text(obj: dict[str, Any], key: str, shown: str, n: int, required: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(shown, n, f"row has no {key!r} field (found: {', '.join(sorted(obj)) or 'nothing'})",
                            "map other column names with fields = { ... } in the dataset block")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(shown, n, f"field {key!r} must be a string, found {type(value).__name__}")
    if required and not value.strip():
        raise DataError(shown, n, f"field {key!r} is empty")
    return value


def _normalise(obj: dict[str, Any], block: Any, fields: dict[str, str], shown: str, n: int) -> dict[str, Any]:
    if block.format == "text":
        return {"text": _text(obj, fields["text"], shown, n), "_line": n}
    if block.format == "instruction":
        instruction = _text(obj, fields["instruction"], shown, n)
        extra = _text(obj, fields["input"], shown, n, required=False)
        output = _text(obj, fields["output"], shown, n)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    else:
        key = fields["messages"]
        messages = obj.get(key)
        if not isinstance(messages, list) or not messages:
            raise DataError(shown, n, f"row needs a non-empty list {key!r} of chat messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(shown, n, f"message {i} must be {{\"role\": one of {', '.join(ROLES)}, \"content\": string}}")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise DataError(shown, n, "the conversation has no non-empty assistant message to learn from")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if block.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": block.system_prompt}] + messages
    return {"messages": messages, "_line": n}


def split(rows: list[dict[str, Any]], share: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic split by a hash of each row's content (stable when rows are added)."""
    if share <= 0:
        return rows, []
    train, val = [], []
    for r in rows:
        key = json.dumps({k: v for k, v in r.items() if k != "_line"}, sort_keys=True)
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if bucket < share else train).append(r)
    if not val:
        val, train = train[-1:], train[:-1]
    if not train:
        raise DataError("", None, "validation_split leaves no training rows")
    return train, val
