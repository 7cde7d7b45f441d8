"""Recipe text -> syntax tree -> plain dict + spans -> ``sdk.spec.Spec``, with every error located.

``load(path)`` is the whole pipeline: it follows ``extends`` (``dsl.merge``), turns the tree into the spec's dict
(``dsl.convert``), validates, and raises ``SpecError`` whose diagnostics read ``PATH:LINE:COL: error: MESSAGE``
with the source line and a caret (``dsl.messages``, ``dsl.locate``); secrets are masked (``dsl.redact``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from dsl.ast import Document
from dsl.convert import FUNCTIONS, RESERVED, Converter, SpanMap
from dsl.locate import describe, focus, locate
from dsl.merge import read_document
from dsl.messages import Written, friendly, problem_diagnostic
from dsl.redact import redact_diagnostics, redact_error, redact_sources
from dsl.syntax import GRAMMAR, parse_text, unescape
from dsl.syntax_errors import MAX_DEPTH, ParseError
from sdk import spec as S
from sdk.errors import Diagnostic, SpecError

__all__ = ["FUNCTIONS", "GRAMMAR", "MAX_DEPTH", "RESERVED", "Document", "ParseError", "Recipe", "SpanMap",
           "describe", "focus", "load", "load_recipe", "loads", "locate", "parse_text", "read_document",
           "unescape", "validate"]


def validate(data: dict[str, Any], spans: SpanMap, sources: dict[str, str], base_dir: Path,
             check_files: bool = True, written: Optional[Written] = None) -> S.Spec:
    """Validate the spec's dict; every field and semantic error is collected into one SpecError."""
    from pydantic import ValidationError

    w = written or Written(spans)
    try:
        return S.Spec.model_validate(data, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as e:
        field_diags: list[Diagnostic] = []
        problems: list[S.Problem] = []
        for err in e.errors():
            if err["type"] == "spec_semantic":
                problems += err["ctx"]["problems"]
                continue
            d = friendly(err, w)
            if d is not None:
                field_diags.append(d)
        if not problems:
            problems = _lenient_problems(data, base_dir, check_files)
        semantic = [problem_diagnostic(p, w, sources) for p in problems]
        diags = _sorted(_dedupe_union_errors(field_diags) + list(dict.fromkeys(semantic)))
        raise redact_error(SpecError(f"{len(diags)} error(s) in the spec", diags, sources)) from None


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=lambda d: (d.span.path, d.span.line, d.span.col) if d.span else ("", 0, 0))


def _lenient_problems(data: dict[str, Any], base_dir: Path, check_files: bool) -> list[S.Problem]:
    """Cross-block problems of a spec whose blocks did not all validate: blocks that fail are taken as written
    (model_construct), so that a type error and an unresolved reference are reported together."""
    from pydantic import ValidationError

    try:
        groups: dict[str, Any] = {}
        for kind in S.KINDS:
            cls = S.BLOCK_TYPES[kind]
            aliases = {f.alias: n for n, f in cls.model_fields.items() if f.alias}
            group = {}
            for label, raw in (data.get(kind) or {}).items():
                try:
                    group[label] = cls.model_validate(raw)
                except ValidationError as e:
                    fields = {aliases.get(k, k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
                    # a value of the wrong type is left out (its field error says so): `paths = "a.md"` taken as
                    # written would be checked as the globs 'a', '.', 'm', 'd'
                    bad = {aliases.get(err["loc"][0], err["loc"][0]) for err in e.errors() if err["loc"]}
                    known = {k: v for k, v in fields.items() if k in cls.model_fields and k not in bad}
                    group[label] = cls.model_construct(**known)
            groups[kind] = group
        spec = S.Spec.model_construct(name=data.get("name", "x"), **groups)
        spec.with_base_dir(base_dir)
        return spec._check(check_files=check_files)
    except Exception:  # noqa: BLE001 - best effort; the field errors are already reported
        return []


def _dedupe_union_errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    """A value that fits no member of a union gets one error per member; keep the first at each place."""
    out: list[Diagnostic] = []
    places: set[tuple[Any, ...]] = set()
    for d in diags:
        place = (d.span.path, d.span.line, d.span.col) if d.span else (d.message,)
        if place in places and d.span is not None:
            continue
        places.add(place)
        out.append(d)
    return out


class Recipe:
    """A loaded recipe: the validated spec, plus what is needed to point back into the source (its sources with
    any literal secret masked)."""

    def __init__(self, spec: S.Spec, spans: SpanMap, sources: dict[str, str], path: Path) -> None:
        self.sources, self._secrets = redact_sources(sources)
        self.spec, self.spans, self.path = spec, spans, path

    def diagnostics(self, problems: list[S.Problem]) -> list[Diagnostic]:
        diags = [Diagnostic(p.message, focus(locate(self.spans, tuple(p.path)), p.focus, self.sources), p.hint)
                 for p in problems]
        return redact_diagnostics(diags, self._secrets)


def load_recipe(path: Union[str, Path], check_files: bool = True) -> Recipe:
    path = Path(path)
    sources: dict[str, str] = {}
    try:
        doc = read_document(path, sources)
    except SpecError as e:
        raise redact_error(e) from None
    base_dir = path.resolve().parent
    conv = Converter(base_dir)
    data = conv.document(doc)
    spec = _validate_all(conv, data, sources, base_dir, check_files, doc.path)
    return Recipe(spec, conv.spans, sources, path)


def _validate_all(conv: Converter, data: dict[str, Any], sources: dict[str, str], base_dir: Path,
                  check_files: bool, main: Optional[str] = None) -> S.Spec:
    """Validate even when the conversion found errors, so that every error is shown at once."""
    if not data and conv.diags:  # no domain block: that one error says it all
        raise redact_error(SpecError("1 error(s) in the recipe", conv.diags, sources))
    try:
        spec = validate(data, conv.spans, sources, base_dir, check_files, Written(conv.spans, conv.values, conv.nulls))
    except SpecError as e:
        diags = _sorted(conv.diags + [_inherited_path(d, main, base_dir) for d in e.diagnostics])
        raise redact_error(SpecError(f"{len(diags)} error(s) in the recipe", diags, sources)) from None
    if conv.diags:
        raise redact_error(SpecError(f"{len(conv.diags)} error(s) in the recipe", conv.diags, sources))
    return spec


def _inherited_path(d: Diagnostic, main: Optional[str], base_dir: Path) -> Diagnostic:
    """A path written in a recipe that the loaded one extends is read from the loaded recipe's folder: say so."""
    if main is None or d.span is None or d.span.path == main:
        return d
    if not any(w in d.message for w in ("does not exist", "matches no file", "no such file")):
        return d
    hint = (f"this path comes from {d.span.path}, which {main} extends, and is read from {_folder(base_dir)} "
            f"(the folder of {main})")
    m = re.search(r"'([^']+)'", d.message)
    if m and not Path(m.group(1)).is_absolute():
        there = os.path.relpath(Path(d.span.path).resolve().parent / m.group(1), base_dir)
        hint += f"; from there it is {there!r}"
    return Diagnostic(d.message, d.span, f"{d.hint}; {hint}" if d.hint else hint, d.severity)


def _folder(base_dir: Path) -> str:
    try:
        shown = str(base_dir.relative_to(Path.cwd()))
    except ValueError:
        shown = str(base_dir)
    return shown.rstrip("/") + "/"


def load(path: Union[str, Path], check_files: bool = True) -> S.Spec:
    return load_recipe(path, check_files).spec


def loads(text: str, base_dir: Union[str, Path] = ".", path: str = "<recipe>", check_files: bool = False) -> S.Spec:
    """Parse and validate recipe text (no extends)."""
    sources = {path: text}
    try:
        doc = parse_text(text, path)
    except SpecError as e:
        raise redact_error(e) from None
    conv = Converter(Path(base_dir).resolve())
    data = conv.document(doc)
    return _validate_all(conv, data, sources, Path(base_dir).resolve(), check_files)
