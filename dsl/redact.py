"""Secrets never reach the terminal: the values written in secret attributes (those typed ``Secret`` in the spec:
``api_key``, ``connection``, ``password``) are masked in the source lines that diagnostics quote, and scrubbed from
messages and hints. Masking keeps every column, so carets still point at the right place. Text from corpora,
models and upstreams goes to the terminal through :func:`shown` (no control or escape sequences)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from sdk import spec as S
from sdk.errors import Diagnostic, DslError

MASK = "*"


@lru_cache(maxsize=1)
def secret_names() -> frozenset[str]:
    from pydantic import BaseModel

    from dsl.locate import flatten

    names: set[str] = set()
    seen: set[type] = set()
    todo: list[Any] = [S.Spec]
    while todo:
        m = todo.pop()
        if not (isinstance(m, type) and issubclass(m, BaseModel)) or m in seen:
            continue
        seen.add(m)
        for n, f in m.model_fields.items():
            parts = flatten(f.annotation)
            if any(a is S.SecretRef for a in parts):
                names.add(f.alias or n)
            todo += parts
    return frozenset(names)


def _pattern() -> re.Pattern[str]:
    names = "|".join(sorted(secret_names())) or "api_key"
    return re.compile(r'\b(?:' + names + r')\b["]?\s*[=:]\s*'
                      r'(?!env\s*\()("""(?:.|\n)*?(?:"""|$)|"(?:[^"\\\n]|\\.)*"?|[^\s{}\[\],#()]+)')


def mask(text: str) -> tuple[str, list[str]]:
    """(text with each literal secret value replaced by stars of the same length, the values found)."""
    found: list[str] = []

    def repl(m: re.Match[str]) -> str:
        value = m.group(1)
        body = value.strip('"')
        if body:
            found.append(body)
        start = m.start(1) - m.start(0)
        masked = "".join(c if c in '"\n' else MASK for c in value)
        return m.group(0)[:start] + masked

    return _pattern().sub(repl, text), found


def shown(text: str, secrets: list[str] = ()) -> str:  # type: ignore[assignment]
    """Text from a corpus, a model or an upstream as a terminal may show it: no control or escape sequences (OSC
    window titles and clipboard writes, CSI, other C0/C1 controls; newlines and tabs stay), and ``secrets`` (values
    of 3 characters or more) scrubbed."""
    from sdk.cleantext import terminal

    return terminal(scrub(text, list(secrets)))


def plain(text: Any) -> str:
    """Text from data (a workdir, a file name, a step's reason or log) for a rich console: :func:`shown`, with its
    rich markup escaped."""
    from rich.markup import escape

    return escape(shown(str(text)))


def scrub(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= 3:
            text = text.replace(s, "***")
    return text


def redact_sources(sources: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    out: dict[str, str] = {}
    secrets: list[str] = []
    for path, text in sources.items():
        out[path], found = mask(text)
        secrets += found
    return out, secrets


def redact_diagnostics(diags: list[Diagnostic], secrets: list[str]) -> list[Diagnostic]:
    if not secrets:
        return diags
    return [Diagnostic(scrub(d.message, secrets), d.span, scrub(d.hint, secrets) if d.hint else d.hint, d.severity)
            for d in diags]


def redact_error(e: DslError) -> DslError:
    """The same error with its quoted sources masked and its messages scrubbed (in place; returned for raise)."""
    e.sources, secrets = redact_sources(e.sources)
    e.diagnostics = redact_diagnostics(e.diagnostics, secrets)
    if secrets:
        e.args = tuple(scrub(str(a), secrets) if isinstance(a, str) else a for a in e.args)
    return e
