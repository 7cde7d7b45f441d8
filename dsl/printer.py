"""Canonical recipe text: ``format_document`` prints a syntax tree with its comments (``dsl fmt``);
``print_spec`` prints a Spec (``spec.to_dsl()``) by first turning it into a syntax tree.

Canonical form: two-space indents, one attribute per line, the author's blank lines kept (at most one in a row)
and never added, each comment on the line it was written on, short lists and objects on one line, strings
normalised, numbers kept as written (in expressions too).
"""

from __future__ import annotations

import json
import re
import typing
from typing import Any, Union

from pydantic import BaseModel

from dsl.ast import Attribute, Block, Document, Pair, Value
from sdk import expr as E
from sdk import spec as S
from sdk.errors import Span

INDENT = "  "
WIDTH = 100
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENUM_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*$")  # onnx-int8 is written bare, as the docs do
_RESERVED = {"true", "false", "null", "and", "or", "not", "extends"}
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
    if v.kind == "expr":  # as written, spaced canonically (0.0 stays 0.0)
        return expr_text(v.raw) if v.raw else E.to_text(v.value)
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


_EXPR_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?'
                         r'|<=|>=|==|!=|[<>+*()-]|[^\s()<>=!+*#-]+|\S')


def expr_text(raw: str) -> str:
    """An expression's tokens as written, one space around operators and words, none inside parentheses or after
    a unary minus. Comments inside it are kept by the comment pass, not here."""
    out: list[str] = []
    prev, unary = "", False
    for tok in _EXPR_TOKEN.findall(raw):
        if tok.startswith("#"):
            continue
        if out and prev != "(" and tok != ")" and not unary:
            out.append(" ")
        out.append(tok)
        unary = tok == "-" and not _operand_end(prev)
        prev = tok
    return "".join(out)


def _operand_end(tok: str) -> bool:
    return tok == ")" or (bool(tok) and (tok[0].isalnum() or tok[0] in '_."') and tok not in ("not", "and", "or"))


def _key(key: str) -> str:
    return key if _IDENT.match(key) and key not in _RESERVED else quote(key)


def _item_lines(item: Union[Attribute, Block], indent: int) -> list[str]:
    pad = INDENT * indent
    lines = [f"{pad}{c}" for c in item.comments]
    if isinstance(item, Attribute):
        text = f"{pad}{item.name} = {format_value(item.value, indent)}".split("\n")
        if item.trailing:  # on the attribute's first line, where it was written
            text[0] += f"  {item.trailing}"
        return lines + text
    head = f"{pad}{item.kind}" + (f" {item.label}" if item.label else "") + " {"
    if not item.items and not item.inner_trailing:
        return lines + [head + "}" + (f"  {item.trailing}" if item.trailing else "")]
    if item.trailing:
        head += f"  {item.trailing}"
    body: list[str] = []
    for i, child in enumerate(item.items):
        if i and child.blank_before:  # blank lines are the author's: kept (at most one), never added
            body.append("")
        body += _item_lines(child, indent + 1)
    body += [f"{INDENT * (indent + 1)}{c}" for c in item.inner_trailing]
    return lines + [head] + body + [f"{pad}}}" + (f"  {item.closing_trailing}" if item.closing_trailing else "")]


def format_document(doc: Document) -> str:
    out: list[str] = [f"{c}" for c in doc.header_comments]
    for path, _ in doc.extends:
        out.append(f"extends {quote(path)}")
    for i, item in enumerate(doc.items):
        if item.blank_before and (i or doc.extends):
            out.append("")
        out += _item_lines(item, 0)
    if doc.footer_comments:
        out += ([""] if doc.footer_blank else []) + doc.footer_comments
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
        if v in enums and _ENUM_WORD.match(v) and v not in _RESERVED:
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
        items.append(Block(kind, shown, attrs, _NOWHERE, blank_before=bool(items)))
    return Document("<spec>", [], [Block("domain", spec.name, items, _NOWHERE)])


def print_spec(spec: S.Spec) -> str:
    return format_document(spec_document(spec))
