"""Recipe text -> syntax tree (``parse_text``), with every syntax error located.

A UTF-8 byte-order mark is skipped; nesting deeper than ``MAX_DEPTH`` brackets is a located error (never a
RecursionError). Syntax error messages and their hints live in ``dsl.syntax_errors``; comments are attached to
the tree by ``dsl.comments``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from dsl.ast import Attribute, Block, Document, Pair, Value
from dsl.comments import attach_comments, mark_blank_lines
from dsl.syntax_errors import ParseError, check_depth, syntax_error
from sdk import expr as E
from sdk.errors import Diagnostic, Span

GRAMMAR = Path(__file__).with_name("grammar.lark")
BOM = "\ufeff"
# a bare word with hyphens and no spaces (`onnx-int8`): the lexer reads it as a subtraction of names, taken back here
HYPHEN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+")
HYPHEN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?:-[A-Za-z_][A-Za-z0-9_]*)+")


def _span(path: str, meta_or_token: Any) -> Span:
    line = getattr(meta_or_token, "line", 1) or 1
    col = getattr(meta_or_token, "column", 1) or 1
    end_line = getattr(meta_or_token, "end_line", line)
    end_col = getattr(meta_or_token, "end_column", None)
    return Span(path, line, col, end_col if end_line == line else None)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "\\": "\\", "0": "\0", "/": "/"}


def unescape(body: str, path: str, token: Token) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        else:
            col = (token.column or 1) + 1 + i
            raise ParseError("bad escape", [Diagnostic(f"unknown escape sequence '\\{nxt}' in string",
                                                       Span(path, token.line or 1, col, col + 2),
                                                       "use \\n, \\t, \\\", \\\\ or \\uXXXX")])
    return "".join(out)


class _ToAst(Transformer):
    def __init__(self, path: str, text: str = "") -> None:
        super().__init__()
        self.path, self.text = path, text

    # ---- structure
    @v_args(meta=True)
    def start(self, meta: Any, children: list[Any]) -> Document:
        extends = [c for c in children if isinstance(c, tuple)]
        items = [c for c in children if not isinstance(c, tuple)]
        return Document(self.path, extends, items)

    @v_args(meta=True)
    def extends(self, meta: Any, children: list[Any]) -> tuple[str, Span]:
        return (unescape(children[0].value[1:-1], self.path, children[0]), _span(self.path, meta))

    @v_args(meta=True)
    def attribute(self, meta: Any, children: list[Any]) -> Attribute:
        name, value = children
        return Attribute(str(name), value, _span(self.path, name), end_line=meta.end_line,
                         end_col=meta.end_column)

    @v_args(meta=True)
    def block(self, meta: Any, children: list[Any]) -> Block:
        kind = children[0]
        label = children[1] if len(children) > 1 and isinstance(children[1], Token) and children[1].type == "LABEL" else None
        items = children[2:] if label is not None else children[1:]
        return Block(str(kind), str(label) if label is not None else None, list(items), _span(self.path, kind),
                     _span(self.path, label) if label is not None else None, end_line=meta.end_line,
                     end_col=meta.end_column)

    def label(self, children: list[Token]) -> Token:
        tok = children[0]
        return Token("LABEL", tok.value, tok.start_pos, tok.line, tok.column, tok.end_line, tok.end_column,
                     tok.end_pos)

    # ---- values
    @v_args(meta=True)
    def string(self, meta: Any, children: list[Token]) -> Value:
        tok = children[0]
        if tok.type == "LONG_STRING":
            text = tok.value[3:-3]
            return Value("string", text, _span(self.path, tok), raw=tok.value)
        return Value("string", unescape(tok.value[1:-1], self.path, tok), _span(self.path, tok), raw=tok.value)

    def number(self, children: list[Token]) -> Value:
        tok = children[0]
        text = tok.value.replace("_", "")
        is_int = re.fullmatch(r"\d+", text) is not None
        return Value("number", int(text) if is_int else float(text), _span(self.path, tok), raw=tok.value)

    def true(self, children: list[Token]) -> Value:
        return Value("bool", True, _span(self.path, children[0]))

    def false(self, children: list[Token]) -> Value:
        return Value("bool", False, _span(self.path, children[0]))

    def name(self, children: list[Token]) -> Value:
        return Value("name", children[0].value, _span(self.path, children[0]))

    @v_args(meta=True)
    def list(self, meta: Any, children: list[Value]) -> Value:
        return Value("list", list(children), _span(self.path, meta))

    @v_args(meta=True)
    def object(self, meta: Any, children: list[Pair]) -> Value:
        return Value("object", list(children), _span(self.path, meta))

    @v_args(meta=True)
    def tagged(self, meta: Any, children: list[Any]) -> Value:
        return Value("tagged", (str(children[0]), list(children[1:])), _span(self.path, meta))

    def pair(self, children: list[Any]) -> Pair:
        key, value = children
        text = unescape(key.value[1:-1], self.path, key) if key.type == "STRING" else key.value
        return Pair(text, value, _span(self.path, key))

    @v_args(meta=True)
    def call(self, meta: Any, children: list[Any]) -> Value:
        return Value("call", (str(children[0]), list(children[1:])), _span(self.path, meta))

    # ---- expressions: kept as nodes of sdk.expr over Values
    def _expr(self, node: Any, span: Span, meta: Any = None) -> Value:
        raw = None
        if meta is not None and getattr(meta, "start_pos", None) is not None:
            raw = self.text[meta.start_pos:meta.end_pos]  # kept so that `dsl fmt` prints numbers as written
        return Value("expr", node, span, raw=raw)

    @v_args(meta=True)
    def or_expr(self, meta: Any, children: list[Value]) -> Value:
        return self._chain(meta, children, "or")

    @v_args(meta=True)
    def and_expr(self, meta: Any, children: list[Value]) -> Value:
        return self._chain(meta, children, "and")

    def _chain(self, meta: Any, children: list[Value], op: str) -> Value:
        node = _node(children[0], self.path)
        for c in children[1:]:
            node = E.BinOp(op, node, _node(c, self.path))
        return self._expr(node, _span(self.path, meta), meta)

    @v_args(meta=True)
    def not_(self, meta: Any, children: list[Value]) -> Value:
        return self._expr(E.Not(_node(children[0], self.path)), _span(self.path, meta), meta)

    @v_args(meta=True)
    def comparison(self, meta: Any, children: list[Any]) -> Value:
        left, op, right = children
        return self._expr(E.BinOp(op.value, _node(left, self.path), _node(right, self.path)), _span(self.path, meta),
                          meta)

    @v_args(meta=True)
    def sum(self, meta: Any, children: list[Any]) -> Value:
        raw = self.text[meta.start_pos:meta.end_pos] if getattr(meta, "start_pos", None) is not None else ""
        if HYPHEN_WORD.fullmatch(raw):  # `onnx-int8`, as the docs write enum values: one bare word
            return Value("name", raw, _span(self.path, meta))
        if HYPHEN_NAME.fullmatch(raw):  # `corpus.my-docs`: a hyphen inside a reference
            msg = f"{raw!r} is not a name: names are letters, digits and _, not -"
            raise ParseError(msg, [Diagnostic(msg, _span(self.path, meta), f"write {raw.replace('-', '_')}")])
        return self._binary(meta, children)

    @v_args(meta=True)
    def product(self, meta: Any, children: list[Any]) -> Value:
        return self._binary(meta, children)

    def _binary(self, meta: Any, children: list[Any]) -> Value:
        node = _node(children[0], self.path)
        for i in range(1, len(children), 2):
            node = E.BinOp(children[i].value, node, _node(children[i + 1], self.path))
        return self._expr(node, _span(self.path, meta), meta)

    @v_args(meta=True)
    def neg(self, meta: Any, children: list[Value]) -> Value:
        inner = children[0]
        if inner.kind == "number":
            return Value("number", -inner.value, _span(self.path, meta), raw="-" + (inner.raw or str(inner.value)))
        return self._expr(E.Neg(_node(inner, self.path)), _span(self.path, meta), meta)


def _node(v: Value, path: str) -> Any:
    """A Value inside an expression -> an sdk.expr node."""
    if v.kind == "expr":
        return v.value
    if v.kind == "number":
        return E.Num(float(v.value))
    if v.kind == "bool":
        return E.Bool(bool(v.value))
    if v.kind == "name":
        try:
            return E.metric_from_name(v.value)
        except E.ExprSyntaxError as e:
            raise ParseError(str(e), [Diagnostic(str(e), v.span)]) from None
    msg = f"a {v.kind} cannot be used in an expression"
    raise ParseError(msg, [Diagnostic(msg, v.span, "expressions combine numbers and metric references")])


_COMMENT_SINKS: list[list[Token]] = []


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=False, lexer_callbacks={"COMMENT": lambda tok: _COMMENT_SINKS[-1].append(tok)})


def parse_text(text: str, path: str = "<recipe>") -> Document:
    """Parse recipe text into a syntax tree; syntax errors raise ParseError with a located diagnostic."""
    text = text[1:] if text.startswith(BOM) else text
    check_depth(text, path)
    comments: list[Token] = []
    _COMMENT_SINKS.append(comments)
    try:
        tree = _lark().parse(text)
        doc = _ToAst(path, text).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, ParseError):
            e.orig_exc.sources.setdefault(path, text)
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise _too_deep(text, path) from None
        raise
    except RecursionError:
        raise _too_deep(text, path) from None
    except UnexpectedInput as e:
        raise syntax_error(e, text, path) from None
    finally:
        _COMMENT_SINKS.pop()
    attach_comments(doc, comments)
    mark_blank_lines(text, doc)
    return doc


def _too_deep(text: str, path: str) -> ParseError:
    msg = "expression nested too deeply"
    return ParseError(msg, [Diagnostic(msg, Span(path, 1, 1), "split it into simpler parts")], {path: text})
