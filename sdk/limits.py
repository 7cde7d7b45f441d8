"""Bounded by default: the one place where a prompt is cut to a model's context (the gateway's engine, the rag
systems' local generators behind ``dsl ask`` and the eval, the eval's local models), and the size limits of data
lines and eval items, each overridable in the recipe (the domain's ``max_line_bytes`` and ``max_item_chars``) or,
where the recipe is silent, through an environment variable. Standard library only."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

MAX_LINE_BYTES = 8 * 1024 * 1024  # one JSONL line (a dataset row, an eval item, a route example)
MAX_ITEM_CHARS = 256 * 1024  # one eval item's question, answer, choice or context
MAX_UNZIPPED_BYTES = 1 << 30  # the member an encrypted (zip) eval set unpacks to (DSL_MAX_UNZIPPED_BYTES)
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # the body of one upstream answer (DSL_MAX_ANSWER_BYTES)


# environment variable -> the domain attribute that overrides it in a recipe
RECIPE_ATTRS = {"DSL_MAX_LINE_BYTES": "max_line_bytes", "DSL_MAX_ITEM_CHARS": "max_item_chars"}
_recipe: dict[str, int] = {}  # the limits of the recipe being planned or applied (see scope)


@contextmanager
def scope(spec: Any) -> Iterator[None]:
    """Within the block, the limits the recipe ``spec`` sets (its domain's ``max_line_bytes``, ``max_item_chars``)
    win over the environment and the defaults; the previous ones are back after it."""
    global _recipe
    before = _recipe
    _recipe = {env: int(v) for env, attr in RECIPE_ATTRS.items() if (v := getattr(spec, attr, None)) is not None}
    try:
        yield
    finally:
        _recipe = before


def child_env() -> dict[str, str]:
    """The recipe's limits as environment variables, for a job run in other processes (a launcher's ranks)."""
    return {name: str(v) for name, v in _recipe.items()}


def limit(name: str, default: int) -> int:
    """The recipe's value for ``name`` when one is in :func:`scope`, else the positive integer in the environment
    variable ``name`` (``DSL_MAX_LINE_BYTES``, ``DSL_MAX_ITEM_CHARS``), else ``default``; 0 means no limit."""
    if name in _recipe:
        return _recipe[name] if _recipe[name] > 0 else 1 << 62
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
