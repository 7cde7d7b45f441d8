"""How a record reaches the disk and comes back: written atomically (a reader never sees half a file), read
without following a link, and validated against its model with an error that names the file and the field.

Every record module (:mod:`sdk.records.state`, :mod:`~sdk.records.manifest`, :mod:`~sdk.records.serve`,
:mod:`~sdk.records.job`, :mod:`~sdk.records.eval`) saves and loads through :func:`save_record` and
:func:`load_record`; nothing else parses a record's JSON."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ValidationError

from sdk.errors import DslError

M = TypeVar("M", bound=BaseModel)


class NotRegular(OSError):
    """A path that is not a regular file where one is read: a FIFO, a device, a socket or a folder."""


def open_regular(path: Path, follow: bool = False) -> int:
    """A read-only descriptor of the regular file ``path``, refusing a symbolic link in its last component
    (OSError ELOOP, unless ``follow``) and anything but a regular file (:class:`NotRegular`: a FIFO planted as
    ``state.json`` would block the reader forever, a device would be read without end). Opened without blocking
    (opening a FIFO blocks), checked on that descriptor, then set to block for the read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file (a FIFO, device, socket or folder)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text_nofollow(path: Path, errors: str = "strict", follow: bool = False) -> str:
    """The text of a workdir file (:func:`open_regular`: no link unless ``follow``, a regular file only)."""
    with os.fdopen(open_regular(path, follow), "r", encoding="utf-8", errors=errors) as f:
        return f.read()


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers never see half a file. The
    temporary file is created exclusively (never through a link), and the rename replaces a link at ``path``
    rather than writing where it points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted path (``steps.rag.docs.status``); the whole file is "the top level"."""
    return ".".join(str(p) for p in loc) if loc else "the top level"


def problems(e: ValidationError, limit: int = 3) -> str:
    """The first few errors of a validation, each as ``FIELD: MESSAGE`` (``FIELD is missing`` for a missing one)."""
    out = []
    for err in e.errors(include_url=False)[:limit]:
        loc = where(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
        out.append(f"{loc} is missing" if err["type"] == "missing" else f"{loc}: {err['msg']}")
    more = len(e.errors()) - limit
    return "; ".join(out) + (f" (and {more} more)" if more > 0 else "")


def parse_json(text: str, path: Path, what: str, hint: str = "") -> Any:
    """JSON text, or a DslError naming the file, the line and column where it stops being JSON (a truncated file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DslError(f"{path}:{e.lineno}:{e.colno}: {what} is not valid JSON ({e.msg}){_hint(hint)}") from None
    except RecursionError:  # a JSON bomb: arrays or objects nested thousands deep
        raise DslError(f"{path}: {what} is not a record (JSON nested too deep){_hint(hint)}") from None
    except ValueError as e:  # an integer of thousands of digits (Python refuses to convert it)
        raise DslError(f"{path}: {what} is not a record ({str(e).split(':')[0]}){_hint(hint)}") from None


def validate(model: type[M], data: Any, path: Path, what: str, hint: str = "") -> M:
    """``model`` from parsed JSON, or a DslError naming the file and the field (``FILE: WHAT is damaged
    (steps.a.b.status: ...)``)."""
    try:
        return model.model_validate(data)  # strict by the model's own configuration
    except ValidationError as e:
        raise DslError(f"{path}: {what} is damaged ({problems(e)}){_hint(hint)}") from None


def load_record(model: type[M], path: Path, what: str, hint: str = "", follow: bool = True) -> M:
    """Read, parse and validate one record file; every failure is a DslError naming the file (and the field)."""
    try:
        text = read_text_nofollow(Path(path), follow=follow)
    except FileNotFoundError:
        raise DslError(f"{path}: {what} is missing{_hint(hint)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DslError(f"{path}: {what} is unreadable ({getattr(e, 'strerror', None) or type(e).__name__})"
                       f"{_hint(hint)}") from None
    return validate(model, parse_json(text, path, what, hint), path, what, hint)


def dumps(record: BaseModel, indent: Optional[int] = 2, sort_keys: bool = False, full: bool = True) -> str:
    """A record as JSON text, extra keys kept: every field (``full``), or only those it was given (a default left
    out stays out, so a record written before a field existed is written back unchanged)."""
    return json.dumps(record.model_dump(mode="json", exclude_unset=not full), indent=indent, sort_keys=sort_keys,
                      default=str)


def save_record(record: BaseModel, path: Path, atomic: bool = True, sort_keys: bool = False,
                full: bool = True) -> str:
    """Write a record (validated when it was built) and return the text written."""
    text = dumps(record, sort_keys=sort_keys, full=full)
    if atomic:
        write_atomic(Path(path), text)
    else:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""
