"""One JSONL reader for every file the spec names (datasets, eval sets, RAG corpora, route examples).

A bad line raises :class:`sdk.errors.DataError` located at ``FILE:LINE`` (``malformed JSON: ... (column N)``), so
each caller only checks the shape of its own rows. A line longer than the limit (8 MiB by default,
``DSL_MAX_LINE_BYTES`` to change it, 0 for none) is refused at its line before it is parsed, and a file is read
one line at a time, so one huge line never sits in memory whole. Standard library only: importing this loads
nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sdk.errors import DataError
from sdk.limits import MAX_LINE_BYTES, limit

LIMIT_HINT = ("split the row, or raise the limit: max_line_bytes = <bytes> in the domain block (0: no limit; or "
              "export DSL_MAX_LINE_BYTES=<bytes> where the recipe sets none)")


def max_line_bytes() -> int:
    """The longest JSONL line accepted, in bytes (``DSL_MAX_LINE_BYTES``, default 8 MiB)."""
    return limit("DSL_MAX_LINE_BYTES", MAX_LINE_BYTES)


def _too_long(shown: str, n: int, cap: int) -> DataError:
    return DataError(shown, n, f"the line is longer than the limit of {cap:,} bytes", LIMIT_HINT)


def parse_jsonl(lines: Iterable[str], shown: str, *, objects: bool = True, start: int = 1,
                max_line: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line, numbered from ``start`` (1).

    ``shown`` is the file name used in errors. With ``objects`` (the default) a value that is not a JSON object
    raises ``expected a JSON object, found TYPE``; pass ``objects=False`` to check the rows yourself. A line over
    ``max_line`` bytes (default: :func:`max_line_bytes`) raises a located error."""
    cap = max_line if max_line is not None else max_line_bytes()
    for n, raw in enumerate(lines, start=start):
        if len(raw) * 4 > cap and len(raw.encode("utf-8", "surrogatepass")) > cap:
            raise _too_long(shown, n, cap)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(shown, n, f"malformed JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:  # a JSON bomb: arrays or objects nested thousands deep
            raise DataError(shown, n, "malformed JSON: nested too deep") from None
        except ValueError as e:  # an integer of thousands of digits, which Python refuses to convert
            raise DataError(shown, n, f"malformed JSON: {str(e).split(':')[0].lower()}") from None
        if objects and not isinstance(obj, dict):
            raise DataError(shown, n, f"expected a JSON object, found {type(obj).__name__}")
        yield n, obj


def read_jsonl(path: Path, shown: str | None = None, *, objects: bool = True,
               max_line: int | None = None) -> Iterator[tuple[int, Any]]:
    """:func:`parse_jsonl` over a UTF-8 file, read one line at a time (split at ``\\n`` only: JSON text may hold
    U+2028 and other characters ``str.splitlines()`` would break at); text that is not UTF-8 raises a DataError
    naming the file and the byte, a line over the limit one naming the file and the line."""
    shown = shown or str(path)
    cap = max_line if max_line is not None else max_line_bytes()
    with open(path, "rb") as f:
        offset, n = 0, 0
        while True:
            raw = f.readline(cap + 1)
            if not raw:
                return
            n += 1
            if len(raw) > cap and not (len(raw) == cap + 1 and raw.endswith(b"\n")):
                raise _too_long(shown, n, cap)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(shown, None, f"not UTF-8 text ({e.reason} at byte {offset + e.start})") from None
            offset += len(raw)
            yield from parse_jsonl([text.removesuffix("\n")], shown, objects=objects, start=n, max_line=cap)
