"""Readable differences between two JSON-like values, for plans ("lr: 0.0002 -> 0.0001") and drift lines."""

from __future__ import annotations

from typing import Any


def diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{name}: (unset) -> {_short(new[k])}")
            elif k not in new:
                out.append(f"{name}: {_short(old[k])} -> (unset)")
            else:
                out += diff(old[k], new[k], name)
        return out
    if old != new:
        return [f"{prefix}: {_short(old)} -> {_short(new)}"]
    return []


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:g}"
    return text if len(text) <= 60 else text[:57] + "..."
