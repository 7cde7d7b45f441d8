"""Text from corpora, models and upstreams made safe to show: :func:`terminal` strips terminal control and escape
sequences (OSC window titles and clipboard writes, CSI, DCS/APC/PM, other C0 and C1 controls; ``\\n`` and ``\\t``
stay), and :func:`redact` masks credentials (``Authorization`` headers, bearer tokens, API keys, and given secret
values). Standard library only."""

from __future__ import annotations

import re
from collections.abc import Iterable

# ESC-introduced sequences first (so their payload goes with them), then C1 string controls, then single controls.
_ESCAPES = re.compile(
    r"\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"      # OSC ... BEL / ST (window title, clipboard, hyperlinks)
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"          # DCS, SOS, PM, APC ... ST
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"                         # CSI (colours, cursor moves, screen clears)
    r"|\x1b[ -/]*[0-~]?"                                 # other ESC sequences (charset, reset, ...)
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)?"               # 8-bit OSC
    r"|[\x90\x98\x9e\x9f][^\x1b\x9c]*\x9c?"              # 8-bit DCS, SOS, PM, APC
    r"|\x9b[0-?]*[ -/]*[@-~]?"                           # 8-bit CSI
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")                   # any other C0 / DEL / C1 control (\n and \t stay)

_CREDENTIALS = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',;}]+"
    r"|(\bbearer\s+)[A-Za-z0-9._~+/=-]{4,}"
    r"|(\b(?:x-)?api[-_]?key\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"
    r"|\b(sk-[A-Za-z0-9_-]{8,})")
MASK = "***"


def terminal(text: str) -> str:
    """``text`` without terminal control or escape sequences (newlines and tabs kept; ``\\r\\n`` becomes ``\\n``)."""
    return _ESCAPES.sub("", text.replace("\r\n", "\n"))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked: the values of Authorization headers, bearer tokens and API-key fields,
    ``sk-`` style keys, and each of ``secrets`` (values of 4 characters or more) wherever it appears."""
    for s in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(s, MASK)

    def mask(m: re.Match[str]) -> str:
        prefix = m.group(1) or m.group(2) or m.group(3)
        return (prefix or "") + MASK

    return _CREDENTIALS.sub(mask, text)


def summary(text: str, secrets: Iterable[str] = (), limit: int = 160) -> str:
    """One short line of an untrusted text (an upstream's error body): redacted, controls stripped, whitespace
    collapsed, cut to ``limit`` characters."""
    line = " ".join(terminal(redact(text, secrets)).split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."
