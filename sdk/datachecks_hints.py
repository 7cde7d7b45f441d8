"""Hints for a data file written in another encoding or format than the step reads (issue 23): the reader's own
error stays the message, and the plan adds what the file looks like and what to do. A UTF-16 file, a Latin-1 file,
a byte order mark, a JSON array or a CSV where JSONL is read, JSONL where one JSON document is read. Only the
first bytes of the file and the failing line are looked at."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sdk.errors import DataError

HEAD = 4096  # bytes of the file looked at for its encoding
LINES = 10_000  # the failing line is read back only this far into a file

UTF16 = "the file is UTF-16 (it starts with a UTF-16 byte order mark): save it as UTF-8"
LATIN = "save the file as UTF-8 (it may be Latin-1 or Windows-1252: iconv -f latin1 -t utf-8 IN > OUT)"
BOM = "the file starts with a byte order mark (U+FEFF): save it as UTF-8 without one"
ARRAY = "this looks like a JSON array: JSONL is one JSON object per line, { ... } on each line"
TABLE = "this looks like CSV or TSV: JSONL is one JSON object per line, { ... } on each line"
JSONL_IN_JSON = "the file holds one JSON value per line (JSONL): name it .jsonl, or set format = jsonl"
BINARY = {b"\x1f\x8b": "gzip-compressed: unpack it (gunzip)", b"PK\x03\x04": "a zip archive: unpack it",
          b"PAR1": "Parquet: write it out as JSONL (e.g. pandas.read_parquet(...).to_json(lines=True, "
                   "orient='records'))"}


def binary_hint(head: bytes) -> Optional[str]:
    """What a binary file is, when its first bytes say so."""
    for magic, what in BINARY.items():
        if head.startswith(magic):
            return f"the file is {what}"
    return "the file is binary, not text" if b"\x00" in head[:512] and not head.startswith((b"\xff\xfe", b"\xfe\xff")) \
        else None


def _line(path: Path, number: int) -> Optional[str]:
    if number > LINES:
        return None
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == number:
                return raw[:HEAD].decode("utf-8", "replace")
    return None


def _is_object(line: str) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def shape_hint(line: str) -> Optional[str]:
    """What a line that is not a JSON object looks like, when it looks like another format."""
    text = line.lstrip("\ufeff \t")
    if text.startswith("["):
        return ARRAY
    if text and text[0] not in "{\"" and any(c in text for c in ",\t;"):
        return TABLE
    return None


def data_hint(path: Optional[Path], e: DataError) -> Optional[str]:
    """A hint for the reader's error ``e`` about ``path``, or None (the error's own hint is kept where it has one)."""
    message = str(e)
    if path is None or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
        binary = binary_hint(head)
        if binary and ("not UTF-8" in message or "malformed JSON" in message):
            return binary
        if "not UTF-8" in message:
            return UTF16 if head.startswith((b"\xff\xfe", b"\xfe\xff")) else LATIN
        if "UTF-8 BOM" in message or (e.line == 1 and head.startswith(b"\xef\xbb\xbf") and "question" in message):
            return BOM
        if "malformed JSON: Extra data" in message and path.suffix.lower() == ".json" and e.line:
            line = _line(path, e.line)
            return JSONL_IN_JSON if line is not None and _is_object(line) else None
        if ("malformed JSON" in message or "expected a JSON object" in message) and e.line:
            line = _line(path, e.line)
            return shape_hint(line) if line is not None else None
    except OSError:
        return None
    return None
