"""What a step wrote, and whether it is still there: each manifest records the size and sha256 of every file its
step wrote; ``dsl plan`` compares sizes (a stat per file), ``dsl verify`` the hashes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from sdk.hashing import file_sha256

MANIFEST = "manifest.json"


def record(folder: Path) -> dict[str, dict[str, Any]]:
    """relative path -> {size, sha256} of every file under ``folder`` (the manifest itself aside)."""
    out: dict[str, dict[str, Any]] = {}
    for root, _, names in os.walk(folder):
        for name in names:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if rel == MANIFEST or p.is_symlink():
                continue
            out[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return dict(sorted(out.items()))


def read_manifest(folder: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{MANIFEST} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{MANIFEST} is unreadable ({type(e).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("outputs", {}), dict) \
            or not isinstance(data.get("written", {}), dict):
        return None, f"{MANIFEST} does not have a manifest's structure"
    return data, None


def check_folder(folder: Path, manifest: dict[str, Any], hashes: bool = False) -> Optional[str]:
    """The first damaged file of an artifact, as 'NAME size differs' / 'NAME is missing' / 'NAME content differs'."""
    for rel, meta in (manifest.get("written") or {}).items():
        p = folder / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if not isinstance(meta, dict) or size != meta.get("size"):
            return f"{rel} size differs"
        if hashes and file_sha256(p) != meta.get("sha256"):
            return f"{rel} content differs"
    return None


def damaged(state: Any, step_id: str, entry: dict[str, Any], hashes: bool = False) -> Optional[str]:
    """Why the recorded artifact of a step cannot be used, or None."""
    if not entry.get("artifact"):
        return None
    folder = state.artifact_path(step_id) if hasattr(state, "artifact_path") else Path(entry["artifact"])
    if folder is None:
        return f"its recorded path {entry['artifact']!r} is outside the workdir"
    if not folder.is_dir():
        return f"{folder.name} is missing"
    manifest, problem = read_manifest(folder)
    if problem:
        return problem
    return check_folder(folder, manifest or {}, hashes)
