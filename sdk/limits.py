"""Bounded by default: the one place where a prompt is cut to a model's context (the gateway's engine, the rag
systems' local generators behind ``dsl ask`` and the eval, the eval's local models), and the size limits of data
lines and eval items, each overridable through an environment variable. Standard library only."""

from __future__ import annotations

import os
from typing import Any, Sequence

MAX_LINE_BYTES = 8 * 1024 * 1024  # one JSONL line (a dataset row, an eval item, a route example)
MAX_ITEM_CHARS = 256 * 1024  # one eval item's question, answer, choice or context


def limit(name: str, default: int) -> int:
    """``default``, or the positive integer in the environment variable ``name`` (``DSL_MAX_LINE_BYTES``,
    ``DSL_MAX_ITEM_CHARS``); 0 there means no limit."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value > 0 else 1 << 62


def fit(ids: Sequence[int], context: int, max_new_tokens: int) -> list[int]:
    """The prompt's token ids cut to the model's context: its last ``context - max_new_tokens`` tokens (at least
    one), so the question at the end of a prompt survives and the answer has room."""
    keep = max(1, int(context) - int(max_new_tokens))
    return list(ids[-keep:])


def fit_text(tokenizer: Any, text: str, context: int, max_new_tokens: int, reserved: int = 0) -> str:
    """``text`` cut the same way (:func:`fit`), as text, leaving ``reserved`` tokens for a chat template around it;
    returned unchanged when it fits."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    kept = fit(ids, int(context) - int(reserved), max_new_tokens)
    return text if len(kept) == len(ids) else tokenizer.decode(kept, skip_special_tokens=True)
