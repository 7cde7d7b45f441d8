"""What a step wrote, and whether it is still there: each manifest records the size and sha256 of every file its
step wrote; ``dsl plan`` compares sizes (a stat per file), ``dsl verify`` the hashes. The manifest itself (the
applied configuration that systems are opened from) is hashed too: its sha256 is recorded in the step's state
entry (``manifest_sha256``) and checked on every read, so an edited manifest is a damaged artifact, never used.

Nothing here follows a link: a manifest or a written file that has become a symbolic link is damaged."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Optional

from sdk.hashing import file_sha256
from sdk.records.files import NotRegular, open_regular
from sdk.records.manifest import MANIFEST, parse_manifest
from sdk.records.state import Status

SMALL = 256 * 1024  # files up to this size are hashed by every check, not only by dsl verify


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


def manifest_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(folder: Path, expected: Optional[str] = None) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The manifest of an artifact folder, or why it cannot be trusted: missing, a link, unreadable, not shaped
    like a manifest, or (with ``expected``, the sha256 the state recorded) edited since it was written."""
    path = folder / MANIFEST
    try:
        with os.fdopen(open_regular(path), "rb") as f:  # a FIFO must not block the reader
            raw = f.read()
    except FileNotFoundError:
        return None, f"{MANIFEST} is missing"
    except NotRegular:
        return None, f"{MANIFEST} is not a regular file (a FIFO, device or folder)"
    except OSError as e:
        return None, f"{MANIFEST} is a link" if path.is_symlink() else f"{MANIFEST} is unreadable ({type(e).__name__})"
    parsed, why = parse_manifest(raw)
    if expected and hashlib.sha256(raw).hexdigest() != expected:  # edited since: say how, when it no longer parses
        return None, why or f"{MANIFEST} content differs from what was applied (edited since)"
    return parsed, why  # validated against sdk.records.manifest.Manifest: a damaged one names its field


def check_folder(folder: Path, manifest: dict[str, Any], hashes: bool = False) -> Optional[str]:
    """The first damaged file of an artifact, as 'NAME size differs' / 'NAME is missing' / 'NAME content differs'."""
    for rel, meta in (manifest.get("written") or {}).items():
        p = folder / rel
        try:
            st = p.lstat()
        except OSError:
            return f"{rel} is missing"
        if stat.S_ISLNK(st.st_mode):
            return f"{rel} is a link"
        if not isinstance(meta, dict) or st.st_size != meta.get("size"):
            return f"{rel} size differs"
        try:  # small files (configurations, chat templates) are hashed on every check: they are cheap and trusted
            if (hashes or st.st_size <= SMALL) and file_sha256(p, follow=False) != meta.get("sha256"):
                return f"{rel} content differs"
        except OSError:
            return f"{rel} is unreadable (or became a link)"
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
    manifest, problem = read_manifest(folder, entry.get("manifest_sha256"))
    if problem:
        return problem
    return check_folder(folder, manifest or {}, hashes)


def adopt_manifests(state: Any) -> list[str]:
    """Workdirs applied before manifests were hashed: record the sha256 of each finished step's manifest as it is
    now (trusted once, by the apply that holds the workdir's lock); returns the steps adopted."""
    adopted = []
    for step_id, entry in state.steps.items():
        if entry.get("status") not in Status.finished() or entry.get("manifest_sha256"):
            continue
        folder = state.artifact_path(step_id)
        if folder is None or not (folder / MANIFEST).is_file() or (folder / MANIFEST).is_symlink():
            continue
        entry["manifest_sha256"] = file_sha256(folder / MANIFEST, follow=False)
        adopted.append(step_id)
    return adopted


def endpoint_named(spec: Any, url: str, key_env: Optional[str]) -> bool:
    """Whether the recipe being run names an endpoint with this URL and key: a secret is sent only there, never
    to a URL that only an artifact's manifest names."""
    from sdk.spec import Endpoint

    def walk(value: Any) -> bool:
        if isinstance(value, Endpoint):
            env = value.api_key.env if value.api_key is not None else None
            return value.url.rstrip("/") == str(url).rstrip("/") and env == key_env
        if isinstance(value, dict):
            return any(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return any(walk(v) for v in value)
        fields = getattr(type(value), "model_fields", None)
        return bool(fields) and any(walk(getattr(value, f, None)) for f in fields)

    return any(walk(block) for _, _, block in spec.blocks())
