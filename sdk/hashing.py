"""Canonical JSON -> sha256, and file content hashes (cached by size and mtime, like a build system)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest(value: Any) -> str:
    return sha256_text(canonical_json(value))


def file_sha256(path: Path, chunk: int = 1 << 20, follow: bool = True) -> str:
    """The sha256 of a file's bytes; ``follow=False`` refuses a symbolic link (OSError ELOOP) instead of reading
    what it points at (files of a workdir)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """Content hashes keyed by (path, size, mtime_ns): unchanged files are not read again."""

    def __init__(self, entries: Optional[dict[str, list[Any]]] = None) -> None:
        self.entries: dict[str, list[Any]] = dict(entries or {})
        self.dirty = False

    def file_hash(self, path: Path) -> str:
        path = Path(path).resolve()
        st = os.stat(path)
        key = str(path)
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        value = file_sha256(path)
        self.entries[key] = [st.st_size, st.st_mtime_ns, value]
        self.dirty = True
        return value
