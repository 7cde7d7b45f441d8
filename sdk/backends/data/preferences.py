"""Preference data, read for the ``align`` step and for ``dsl prefs check``.

Two shapes, one file holding one of them:

- paired rows ``{"prompt", "chosen", "rejected"}`` (``method = dpo``, ``simpo`` and ``orpo``);
- unpaired rows ``{"prompt", "completion", "label"}`` with ``label`` a JSON bool, true for a desirable answer
  (``method = kto``).

Each text value is a string or a list of chat messages; a file is all text or all chat (a prompt of messages and
answers of one assistant message each: a plain-string answer next to a chat prompt becomes that message, a
plain-string prompt next to a chat answer a user message). ``fields`` maps other column names. A bad row raises a
:class:`sdk.errors.DataError` at ``FILE:LINE``. Standard library only: importing this loads nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.errors import DataError
from sdk.jsonl import read_jsonl

PAIRED = ("prompt", "chosen", "rejected")
UNPAIRED = ("prompt", "completion", "label")
SHOWN_LINES = 10  # how many example lines a summary keeps for each finding


def _messages(value: Any, shown: str, line: int, key: str) -> list[dict[str, str]]:
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(shown, line, f"{key}[{i}] must be a message {{\"role\": ..., \"content\": \"...\"}}")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise DataError(shown, line, f"{key}[{i}] has role {m['role']!r}; expected system, user, assistant or tool")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _columns(keys: tuple[str, ...], fields: dict[str, str] | None) -> dict[str, str]:
    return {k: (fields or {}).get(k, k) for k in keys}


def _missing(shown: str, line: int, key: str, col: str, keys: tuple[str, ...]) -> DataError:
    what = "a preference row has " + ", ".join(keys[:-1]) + " and " + keys[-1]
    return DataError(shown, line, f"missing {col!r}" + (f" (the {key} field)" if col != key else ""),
                     what + " (map other column names with fields = { ... })")


def _text_or_chat(obj: dict[str, Any], col: str, shown: str, line: int) -> Any:
    value = obj[col]
    if isinstance(value, str):
        if not value.strip():
            raise DataError(shown, line, f"{col!r} is empty")
        return value
    if isinstance(value, list) and value:
        return _messages(value, shown, line, col)
    raise DataError(shown, line, f"{col!r} must be text or a non-empty list of chat messages, "
                                 f"not {type(value).__name__}")


def _as_chat(row: dict[str, Any], answers: tuple[str, ...], cols: dict[str, str], shown: str, line: int) -> bool:
    """Make a row all chat when any value is chat; True when it is."""
    if not any(isinstance(row[k], list) for k in ("prompt",) + answers):
        return False
    if isinstance(row["prompt"], str):
        row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    for key in answers:
        if isinstance(row[key], str):
            row[key] = [{"role": "assistant", "content": row[key]}]
        elif row[key][-1]["role"] != "assistant":
            raise DataError(shown, line, f"{cols[key]!r} must end with an assistant message")
    return True


def _read(path: Path, shown: str, keys: tuple[str, ...], answers: tuple[str, ...],
          fields: dict[str, str] | None) -> list[dict[str, Any]]:
    cols = _columns(keys, fields)
    rows: list[dict[str, Any]] = []
    chat_seen: tuple[int, bool] | None = None
    for line, obj in read_jsonl(path, shown):
        row: dict[str, Any] = {}
        for key, col in cols.items():
            if col not in obj:
                raise _missing(shown, line, key, col, keys)
            if key == "label":
                if not isinstance(obj[col], bool):
                    raise DataError(shown, line, f"{col!r} must be true (a desirable answer) or false (an undesirable "
                                                 f"one), not {json.dumps(obj[col])}")
                row[key] = obj[col]
            else:
                row[key] = _text_or_chat(obj, col, shown, line)
        is_chat = _as_chat(row, answers, cols, shown, line)
        if chat_seen is not None and chat_seen[1] != is_chat:
            raise DataError(shown, line, f"this row is {'chat' if is_chat else 'text'} but line {chat_seen[0]} is "
                                         f"{'chat' if chat_seen[1] else 'text'}: a preference file holds one shape")
        chat_seen = chat_seen or (line, is_chat)
        row["_line"] = line
        rows.append(row)
    return rows


def read_pairs(path: Path, shown: str, fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Paired rows ``{prompt, chosen, rejected}``, normalised: all text, or all chat (prompt messages, one assistant
    message per answer). Each keeps ``_line``. A bad row raises a DataError at ``shown:LINE``."""
    return _read(path, shown, PAIRED, ("chosen", "rejected"), fields)


def read_unpaired(path: Path, shown: str, fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Unpaired rows ``{prompt, completion, label}`` (KTO), normalised as :func:`read_pairs`; ``label`` must be a
    JSON bool (true: a desirable answer). Each keeps ``_line``."""
    return _read(path, shown, UNPAIRED, ("completion",), fields)


def read_preferences(path: Path, shown: str, method: str, fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The rows a preference method reads: unpaired for kto, pairs for dpo, simpo and orpo."""
    return (read_unpaired if method == "kto" else read_pairs)(path, shown, fields)


def text(value: Any) -> str:
    """The words of a value: the text itself, or the contents of its messages."""
    return value if isinstance(value, str) else " ".join(m["content"] for m in value)


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _duplicates(rows: list[dict[str, Any]]) -> tuple[int, list[list[int]]]:
    """Rows whose prompt an earlier row already had: their number and ``[line, first line]`` examples."""
    first: dict[str, int] = {}
    found: list[list[int]] = []
    for r in rows:
        k = _key(r["prompt"])
        if k in first:
            found.append([r["_line"], first[k]])
        else:
            first[k] = r["_line"]
    return len(found), found[:SHOWN_LINES]


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def pair_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs, shape, identical pairs (chosen == rejected: nothing to learn), repeated prompts, and the length bias
    of chosen over rejected (a known cause of reward hacking: DPO learns 'longer is better' when chosen answers are
    mostly longer). Lengths are in characters."""
    identical = [r["_line"] for r in rows if text(r["chosen"]) == text(r["rejected"])]
    longer = sum(len(text(r["chosen"])) > len(text(r["rejected"])) for r in rows)
    dup, dup_lines = _duplicates(rows)
    return {"pairs": len(rows), "shape": "chat" if rows and isinstance(rows[0]["prompt"], list) else "text",
            "identical_pairs": len(identical), "identical_lines": identical[:SHOWN_LINES],
            "duplicate_prompts": dup, "duplicate_lines": dup_lines,
            "chosen_longer_share": round(longer / max(len(rows), 1), 3),
            "mean_chosen_chars": _mean([len(text(r["chosen"])) for r in rows]),
            "mean_rejected_chars": _mean([len(text(r["rejected"])) for r in rows])}


def unpaired_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Examples, shape, label balance, contradictions (the same prompt and answer labelled both ways), repeated
    prompts, and the mean length of desirable and undesirable answers (characters)."""
    good = [r for r in rows if r["label"]]
    bad = [r for r in rows if not r["label"]]
    labels: dict[str, tuple[int, bool]] = {}
    conflicts: list[list[int]] = []
    for r in rows:
        k = _key(r["prompt"]) + "\x00" + _key(r["completion"])
        if k in labels and labels[k][1] != r["label"]:
            conflicts.append([r["_line"], labels[k][0]])
        labels.setdefault(k, (r["_line"], r["label"]))
    dup, dup_lines = _duplicates(rows)
    return {"examples": len(rows), "shape": "chat" if rows and isinstance(rows[0]["prompt"], list) else "text",
            "desirable": len(good), "undesirable": len(bad),
            "desirable_share": round(len(good) / max(len(rows), 1), 3),
            "conflicting_labels": len(conflicts), "conflicting_lines": conflicts[:SHOWN_LINES],
            "duplicate_prompts": dup, "duplicate_lines": dup_lines,
            "mean_desirable_chars": _mean([len(text(r["completion"])) for r in good]),
            "mean_undesirable_chars": _mean([len(text(r["completion"])) for r in bad])}


def summary_of(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    return unpaired_summary(rows) if method == "kto" else pair_summary(rows)


def label_problem(summary: dict[str, Any]) -> str | None:
    """Why KTO cannot learn from an unpaired file, or None: it needs both desirable and undesirable examples (with
    one label only its loss has nothing to contrast: every answer is pushed the same way)."""
    if summary["examples"] and not (summary["desirable"] and summary["undesirable"]):
        which = "desirable (label true)" if summary["desirable"] else "undesirable (label false)"
        return (f"all {summary['examples']} examples are {which}: KTO needs both desirable and undesirable "
                "answers")
    return None


def kto_weights_hint(summary: dict[str, Any], desirable_weight: float, undesirable_weight: float) -> str | None:
    """The KTO paper's advice on unbalanced labels: desirable_weight x desirable / (undesirable_weight x undesirable)
    within [1, 4/3]; a suggestion when the file and weights fall outside it, else None."""
    good, bad = summary["desirable"], summary["undesirable"]
    if not good or not bad:
        return None
    ratio = desirable_weight * good / (undesirable_weight * bad)
    if 1.0 <= ratio <= 4 / 3:
        return None
    low = round(bad * undesirable_weight / good, 2)
    return (f"{good} desirable and {bad} undesirable examples with desirable_weight = {desirable_weight} and "
            f"undesirable_weight = {undesirable_weight}: the KTO paper keeps desirable_weight x desirable / "
            f"(undesirable_weight x undesirable) within 1 .. 1.33 (it is {ratio:.2f}); e.g. desirable_weight = "
            f"{low} .. {round(low * 4 / 3, 2)}")
