"""Canonical recipe text: ``format_document`` prints a syntax tree with its comments (``dsl fmt``);
``print_spec`` prints a Spec (``spec.to_dsl()``) by first turning it into a syntax tree.

Canonical form: two-space indents, one attribute per line, one blank line between blocks, blank lines inside a
block kept (at most one), short lists and objects on one line, strings normalised, numbers kept as written.
"""

from __future__ import annotations

import json
import re
import typing
from typing import Any, Optional, Union

from pydantic import BaseModel

from dsl.ast import Attribute, Block, Document, Pair, Value
from sdk import expr as E
from sdk import spec as S
from sdk.errors import Span

INDENT = "  "
WIDTH = 100
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"true", "false", "and", "or", "not", "extends"}
_NOWHERE = Span("<spec>", 0, 0)


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def format_number(v: Union[int, float]) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def format_value(v: Value, indent: int) -> str:
    if v.kind == "string":
        if v.raw and v.raw.startswith('"""'):
            return v.raw
        return quote(v.value)
    if v.kind == "number":  # as the author wrote it (2e-5 stays 2e-5, 1_000 stays 1_000)
        return v.raw if v.raw else format_number(v.value)
    if v.kind == "bool":
        return "true" if v.value else "false"
    if v.kind == "name":
        return v.value
    if v.kind == "expr":
        return E.to_text(v.value)
    if v.kind == "call":
        fn, args = v.value
        return f"{fn}({', '.join(format_value(a, indent) for a in args)})"
    if v.kind == "list":
        parts = [format_value(x, indent + 1) for x in v.value]
        one_line = "[" + ", ".join(parts) + "]"
        if len(one_line) + indent * 2 <= WIDTH and "\n" not in one_line:
            return one_line
        pad = INDENT * (indent + 1)
        return "[\n" + "".join(f"{pad}{p},\n" for p in parts) + INDENT * indent + "]"
    if v.kind in ("object", "tagged"):
        tag, pairs = v.value if v.kind == "tagged" else (None, v.value)
        head = f"{tag} " if tag else ""
        if not pairs:
            return head + "{}"
        parts = [f"{_key(p.key)} = {format_value(p.value, indent + 1)}" for p in pairs]
        one_line = head + "{ " + ", ".join(parts) + " }"
        if len(one_line) + indent * 2 <= WIDTH and "\n" not in one_line:
            return one_line
        pad = INDENT * (indent + 1)
        return head + "{\n" + "".join(f"{pad}{p}\n" for p in parts) + INDENT * indent + "}"
    raise AssertionError(v.kind)  # pragma: no cover


def _key(key: str) -> str:
    return key if _IDENT.match(key) and key not in _RESERVED else quote(key)


def _item_lines(item: Union[Attribute, Block], indent: int) -> list[str]:
    pad = INDENT * indent
    lines = [f"{pad}{c}" for c in item.comments]
    if isinstance(item, Attribute):
        text = f"{pad}{item.name} = {format_value(item.value, indent)}"
        if item.trailing:
            text += f"  {item.trailing}"
        return lines + text.split("\n")
    head = f"{pad}{item.kind}" + (f" {item.label}" if item.label else "") + " {"
    if not item.items and not item.inner_trailing:
        return lines + [head + "}" + (f"  {item.trailing}" if item.trailing else "")]
    if item.trailing:
        head += f"  {item.trailing}"
    body: list[str] = []
    prev: Optional[Union[Attribute, Block]] = None
    for child in item.items:
        separate = prev is not None and (isinstance(child, Block) or isinstance(prev, Block)) and item.kind == "domain"
        if prev is not None and (child.blank_before or separate):
            body.append("")
        body += _item_lines(child, indent + 1)
        prev = child
    body += [f"{INDENT * (indent + 1)}{c}" for c in item.inner_trailing]
    return lines + [head] + body + [f"{pad}}}"]


def format_document(doc: Document) -> str:
    out: list[str] = [f"{c}" for c in doc.header_comments]
    for path, _ in doc.extends:
        out.append(f"extends {quote(path)}")
    if doc.extends:
        out.append("")
    for i, item in enumerate(doc.items):
        if i:
            out.append("")
        out += _item_lines(item, 0)
    if doc.footer_comments:
        out += [""] + doc.footer_comments
    return "\n".join(out).rstrip() + "\n"


def format_text(text: str, path: str = "<recipe>") -> str:
    from dsl.parser import parse_text

    return format_document(parse_text(text, path))


# ------------------------------------------------------------------------------------------- spec -> text


def _literals(annotation: Any) -> set[str]:
    out: set[str] = set()
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        out |= {a for a in typing.get_args(annotation) if isinstance(a, str)}
    for a in typing.get_args(annotation):
        if a is not annotation:
            out |= _literals(a)
    return out


def _value(v: Any, enums: set[str]) -> Value:
    if isinstance(v, bool):
        return Value("bool", v, _NOWHERE)
    if isinstance(v, (int, float)):
        return Value("number", v, _NOWHERE)
    if isinstance(v, str):
        if v in enums and _IDENT.match(v) and v not in _RESERVED:
            return Value("name", v, _NOWHERE)
        if "\n" in v and '"""' not in v and not v.endswith('"'):
            return Value("string", v, _NOWHERE, raw=f'"""{v}"""')
        return Value("string", v, _NOWHERE)
    if isinstance(v, S.Ref):
        return Value("name", str(v), _NOWHERE)
    if isinstance(v, S.SecretRef):
        return Value("call", ("env", [Value("string", v.env, _NOWHERE)]), _NOWHERE)
    if isinstance(v, S.FileRef):
        return Value("call", ("file", [Value("string", v.path, _NOWHERE)]), _NOWHERE)
    if isinstance(v, (E.Num, E.Bool)):
        return _value(v.value if isinstance(v, E.Bool) or v.value != int(v.value) else int(v.value), enums)
    if isinstance(v, (E.Metric, E.BinOp, E.Not, E.Neg)):
        return Value("expr", v, _NOWHERE)
    if isinstance(v, BaseModel):
        pairs = [Pair(k, val, _NOWHERE) for k, val in _model_pairs(v)]
        if "type" in type(v).model_fields:
            return Value("tagged", (v.type, pairs), _NOWHERE)  # type: ignore[attr-defined]
        return Value("object", pairs, _NOWHERE)
    if isinstance(v, dict):
        return Value("object", [Pair(str(k), _value(x, enums), _NOWHERE) for k, x in v.items()], _NOWHERE)
    if isinstance(v, (list, tuple)):
        return Value("list", [_value(x, enums) for x in v], _NOWHERE)
    raise TypeError(f"cannot print {type(v).__name__}")


def _model_pairs(model: BaseModel) -> list[tuple[str, Value]]:
    out = []
    fields = sorted(type(model).model_fields.items(), key=lambda kv: not kv[1].is_required())  # stable
    for name, field in fields:
        if name == "type":
            continue
        value = getattr(model, name)
        if not field.is_required() and value == field.get_default(call_default_factory=True):
            continue
        out.append((field.alias or name, _value(value, _literals(field.annotation))))
    return out


def spec_document(spec: S.Spec) -> Document:
    items: list[Union[Attribute, Block]] = []
    if spec.description is not None:
        items.append(Attribute("description", _value(spec.description, set()), _NOWHERE))
    for kind, label, block in spec.blocks():
        attrs: list[Union[Attribute, Block]] = [Attribute(k, v, _NOWHERE) for k, v in _model_pairs(block)]
        shown = None if kind in S.UNLABELLED and label == S.DEFAULT_LABEL else label
        items.append(Block(kind, shown, attrs, _NOWHERE))
    return Document("<spec>", [], [Block("domain", spec.name, items, _NOWHERE)])


def print_spec(spec: S.Spec) -> str:
    return format_document(spec_document(spec))
