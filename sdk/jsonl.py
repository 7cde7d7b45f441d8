"""One JSONL reader for every file the spec names (datasets, eval sets, RAG corpora, route examples).

A bad line raises :class:`sdk.errors.DataError` located at ``FILE:LINE`` (``malformed JSON: ... (column N)``), so
each caller only checks the shape of its own rows. Standard library only: importing this loads nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sdk.errors import DataError


def parse_jsonl(lines: Iterable[str], shown: str, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line, numbered from 1.

    ``shown`` is the file name used in errors. With ``objects`` (the default) a value that is not a JSON object
    raises ``expected a JSON object, found TYPE``; pass ``objects=False`` to check the rows yourself."""
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(shown, n, f"malformed JSON: {e.msg} (column {e.colno})") from None
        if objects and not isinstance(obj, dict):
            raise DataError(shown, n, f"expected a JSON object, found {type(obj).__name__}")
        yield n, obj


def read_jsonl(path: Path, shown: str | None = None, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """:func:`parse_jsonl` over a UTF-8 file's lines; text that is not UTF-8 raises a DataError naming the file."""
    shown = shown or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(shown, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    # split at "\n" only: JSON text may hold U+2028 and other characters str.splitlines() would break at
    yield from parse_jsonl(text.split("\n"), shown, objects=objects)
