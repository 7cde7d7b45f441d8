"""Pydantic's validation errors -> one located, friendly message each, with hints for habits from other formats.

Strict values: a number is a number literal and a boolean is ``true``/``false``; each refused value says what was
written instead (``write 20, not "20"``, ``did you mean true?``). A value that fits no member of a union is
reported against the member it evidently meant (an object tagged ``endpoint`` is an endpoint). No message
repeats a value that was written in a secret attribute.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from dsl.ast import Value
from dsl.locate import SpanMap, describe, fields_of, flatten, is_internal, locate, model_at, near
from sdk import spec as S
from sdk.errors import Diagnostic, Span

TRUE_WORDS = ("True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y")
FALSE_WORDS = ("False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N")
NULL_WORDS = ("None", "none", "nil", "Nil", "NULL", "Null", "undefined", "~")
EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
            "bool_type": "true or false", "string_type": "a string", "list_type": "a list [ ... ]",
            "dict_type": "an object { ... }", "model_type": "an object { ... }", "model_attributes_type":
            "an object { ... }", "int_parsing": "an integer", "float_parsing": "a number",
            "bool_parsing": "true or false"}
KIND_WORDS = {"string": "a string", "number": "a number", "bool": "a boolean", "name": "a bare name",
              "list": "a list", "object": "an object", "tagged": "an object", "call": "a function call",
              "expr": "an expression"}


@dataclass
class Written:
    """What the recipe wrote, for messages: the values by spec path and the `null`s that unset attributes."""

    spans: SpanMap = field(default_factory=dict)
    values: dict[tuple[Any, ...], Value] = field(default_factory=dict)
    nulls: dict[tuple[Any, ...], Span] = field(default_factory=dict)


def _is_secret_path(loc: tuple[Any, ...]) -> bool:
    from dsl.redact import secret_names

    return any(p in secret_names() for p in loc if isinstance(p, str))


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type_hint(kind: str, got: Any, written: Optional[Value], secret: bool = False) -> tuple[str, Optional[str]]:
    """(what was written, hint) for a value of the wrong type."""
    wkind = written.kind if written is not None else ("bool" if isinstance(got, bool) else
                                                      "number" if isinstance(got, (int, float)) else
                                                      "string" if isinstance(got, str) else "")
    what = KIND_WORDS.get(wkind, f"a {type(got).__name__}")
    if wkind == "name" and isinstance(got, str) and len(got) < 80 and not secret:
        what = f"{what} {got!r}"  # the refused word is named: `packing = yes` -> got a bare name 'yes'
    raw = written.raw if written is not None and written.raw else None
    if kind in ("int_type", "int_from_float", "float_type", "int_parsing", "float_parsing"):
        if isinstance(got, str) and wkind == "string" and re.fullmatch(r"\s*[-+]?[\d_.]+([eE][-+]?\d+)?\s*", got):
            return what, f"write {got.strip()}, not \"{got}\""
        if isinstance(got, str) and got in NULL_WORDS:
            return what, "did you mean null? (`null` leaves an attribute unset)"
        if isinstance(got, bool):
            return what, "a boolean is not a number: write a number such as 1"
        if isinstance(got, float) and not math.isfinite(got):  # 1e400 where an integer belongs
            return "a number that is not finite", "a number is at most about 1.8e308 in size, and never inf or nan"
        if isinstance(got, float) and kind != "float_type" and got == int(got):
            return "a number with a fraction", f"write {int(got)}"
        return what, None
    if kind in ("bool_type", "bool_parsing"):
        text = str(got)
        if isinstance(got, (int, float)) and not isinstance(got, bool) and got in (0, 1):
            return what, f"did you mean {'true' if got == 1 else 'false'}?"
        if text in TRUE_WORDS or text.lower() == "true":
            return what, "did you mean true?" if wkind != "string" else f"write true, not \"{text}\""
        if text in FALSE_WORDS or text.lower() == "false":
            return what, "did you mean false?" if wkind != "string" else f"write false, not \"{text}\""
        if text in NULL_WORDS:
            return what, "did you mean null? (`null` leaves an attribute unset)"
        return what, "a boolean is written true or false"
    if kind == "string_type" and wkind in ("number", "bool"):
        return what, f"strings are quoted: write \"{raw or _shown(got)}\""
    return what, None


def _conflict_key(loc: tuple[Any, ...], msg: str, w: Written) -> Optional[tuple[Any, ...]]:
    """For a message about a whole block or object (two attributes that conflict), the path of the attribute it
    names that was written last: the one that makes the conflict."""
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", msg))
    written = [(w.spans[loc + (n,)][0], loc + (n,)) for n in names if loc + (n,) in w.spans]
    if not written:
        return None
    return max(written, key=lambda sp: (sp[0].line, sp[0].col))[1]


def friendly(err: dict[str, Any], w: Written) -> Optional[Diagnostic]:
    """One pydantic error -> a located diagnostic, or None when it only repeats another member of a union."""
    loc = tuple(p for p in err["loc"] if not is_internal(p))
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    got = err.get("input")
    where = describe(loc[:-1]) if loc else "domain"
    name = loc[-1] if loc else ""
    at = lambda use_key=False: locate(w.spans, loc, use_key)  # noqa: E731
    secret = _is_secret_path(loc)
    if kind == "missing":
        if loc in w.nulls:
            return Diagnostic(f"{describe(loc)} is required and cannot be null", w.nulls[loc],
                              f"give {name} a value, or drop the `{name} = null` line")
        return Diagnostic(f"{where} is missing required attribute {name!r}", at(True))
    if kind == "extra_forbidden":
        model = model_at(loc[:-1])
        allowed = fields_of(model) if model is not None else []
        named = [a for a in allowed if a != "type"]
        hint = near(name, allowed) or (f"attributes: {', '.join(named)}" if named else
                                       "it takes no attributes" if model is not None else None)
        return Diagnostic(f"unknown attribute {name!r} in {where}", at(True), hint)
    if kind in ("ref", "ref_kind") and isinstance(got, dict):
        if "type" in got:
            return None  # a tagged object meant the union's other member: its own errors are reported
        return Diagnostic(f"{describe(loc)}: expected a reference KIND.LABEL (e.g. finetune.sip), got an object",
                          at())
    if kind == "ref":
        shown = f", got {_shown(got)}" if isinstance(got, str) and not secret and len(got) < 80 else ""
        return Diagnostic(f"{describe(loc)}: expected a reference KIND.LABEL (e.g. finetune.sip){shown}", at(),
                          "a reference is written without quotes: finetune.sip" if isinstance(got, str)
                          and w.values.get(loc) is not None and w.values[loc].kind == "string" else None)
    if kind in EXPECTED:
        if isinstance(got, dict) and "type" in got and kind in ("string_type", "int_type", "float_type"):
            return None
        what, hint = _type_hint(kind, got, w.values.get(loc), secret)
        return Diagnostic(f"{describe(loc)}: expected {EXPECTED[kind]}, got {what}", at(), hint)
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        shown = repr(got) if isinstance(got, (str, int, float)) and not secret else "the value"
        hint = near(got, options) if isinstance(got, str) else None
        if hint is None and isinstance(got, str) and got in TRUE_WORDS + FALSE_WORDS + NULL_WORDS:
            hint = "true, false and null are lower case"
        return Diagnostic(f"{describe(loc)}: {shown} is not one of {', '.join(options)}", at(), hint)
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag")
        return Diagnostic(f"{describe(loc)}: {tag!r} is not a kind of {name} (kinds: {', '.join(tags)})", at(),
                          near(tag, tags) or f"write `{name} = {tags[0]} {{ ... }}`" if tags else None)
    if kind == "union_tag_not_found":
        tags = _tags(loc)
        return Diagnostic(f"{describe(loc)}: say which kind of {name} this is", at(),
                          f"write `{name} = {tags[0]} {{ ... }}` (kinds: {', '.join(tags)})" if tags else None)
    if kind == "string_pattern_mismatch" and loc and loc[-1] not in ("table",):
        shown = repr(got) if not secret else "the value"
        return Diagnostic(f"{describe(loc)}: {shown} is not a valid name (letters, digits and _)", at())
    if kind == "finite_number":  # 1e400 parses as inf; inf and nan are refused in every number
        raw = w.values[loc].raw if w.values.get(loc) is not None and w.values[loc].raw else None
        return Diagnostic(f"{describe(loc)}: {raw or 'the value'} is not a finite number", at(),
                          "a number is at most about 1.8e308 in size, and never inf or nan")
    text = msg[0].lower() + msg[1:] if msg else msg
    text = re.sub(r"^value error, ", "", text)
    if isinstance(got, dict):  # a rule over a whole block: point at the attribute that breaks it
        key = _conflict_key(loc, text, w)
        if key is not None:
            return Diagnostic(f"{describe(loc)}: {text}", locate(w.spans, key, True))
    return Diagnostic(f"{describe(loc)}: {text}", at())


def _tags(loc: tuple[Any, ...]) -> list[str]:
    model = model_at(loc[:-1])
    if model is None:
        return []
    f = next((f for n, f in model.model_fields.items() if (f.alias or n) == loc[-1]), None)  # type: ignore[attr-defined]
    if f is None:
        return []
    return [m.model_fields["type"].default for m in flatten(f.annotation)
            if isinstance(m, type) and hasattr(m, "model_fields") and "type" in m.model_fields]


def problem_diagnostic(p: S.Problem, w: Written, sources: dict[str, str]) -> Diagnostic:
    """A semantic problem of ``Spec._check`` -> a located diagnostic (conflicts at the attribute written last)."""
    from dsl.locate import focus

    path = tuple(p.path)
    hint = p.hint
    m = re.match(r"unknown metric '([^']+)'", p.message)
    if m and hint is None:
        hint = near(m.group(1), getattr(S, "METRIC_NAMES", ()))
    span = focus(locate(w.spans, path), p.focus, sources)
    if len(path) == 2 and path[0] in S.KINDS and p.focus is None:
        key = _conflict_key(path, p.message, w)
        if key is not None:
            span = locate(w.spans, key, True)
    return Diagnostic(p.message, span, hint)
