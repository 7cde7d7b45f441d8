"""Recipe text -> syntax tree -> plain dict + spans -> ``sdk.spec.Spec``, with every error located.

``load(path)`` is the whole pipeline: it follows ``extends``, merges blocks, validates, and raises
``SpecError`` whose diagnostics read ``PATH:LINE:COL: error: MESSAGE`` with the source line and a caret.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from dsl.ast import Attribute, Block, Document, Pair, Value
from sdk import expr as E
from sdk import spec as S
from sdk.errors import Diagnostic, Span, SpecError

GRAMMAR = Path(__file__).with_name("grammar.lark")

TOKEN_NAMES = {
    "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'",
    "EQUAL": "'='", "COMMA": "','", "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string",
    "NUMBER": "a number", "TRUE": "true", "FALSE": "false", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*'", "MINUS": "'-'", "EXTENDS": "extends", "$END": "end of file", "_OR": "or", "_AND": "and",
    "_NOT": "not",
}




class ParseError(SpecError):
    pass


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
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

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
        return Attribute(str(name), value, _span(self.path, name), end_line=meta.end_line)

    @v_args(meta=True)
    def block(self, meta: Any, children: list[Any]) -> Block:
        kind = children[0]
        label = children[1] if len(children) > 1 and isinstance(children[1], Token) and children[1].type == "LABEL" else None
        items = children[2:] if label is not None else children[1:]
        return Block(str(kind), str(label) if label is not None else None, list(items), _span(self.path, kind),
                     _span(self.path, label) if label is not None else None, end_line=meta.end_line)

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
    def _expr(self, node: Any, span: Span) -> Value:
        return Value("expr", node, span)

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
        return self._expr(node, _span(self.path, meta))

    @v_args(meta=True)
    def not_(self, meta: Any, children: list[Value]) -> Value:
        return self._expr(E.Not(_node(children[0], self.path)), _span(self.path, meta))

    @v_args(meta=True)
    def comparison(self, meta: Any, children: list[Any]) -> Value:
        left, op, right = children
        return self._expr(E.BinOp(op.value, _node(left, self.path), _node(right, self.path)), _span(self.path, meta))

    @v_args(meta=True)
    def sum(self, meta: Any, children: list[Any]) -> Value:
        return self._binary(meta, children)

    @v_args(meta=True)
    def product(self, meta: Any, children: list[Any]) -> Value:
        return self._binary(meta, children)

    def _binary(self, meta: Any, children: list[Any]) -> Value:
        node = _node(children[0], self.path)
        for i in range(1, len(children), 2):
            node = E.BinOp(children[i].value, node, _node(children[i + 1], self.path))
        return self._expr(node, _span(self.path, meta))

    @v_args(meta=True)
    def neg(self, meta: Any, children: list[Value]) -> Value:
        inner = children[0]
        if inner.kind == "number":
            return Value("number", -inner.value, _span(self.path, meta), raw="-" + (inner.raw or str(inner.value)))
        return self._expr(E.Neg(_node(inner, self.path)), _span(self.path, meta))


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


# ------------------------------------------------------------------------------------------------ comments


def _attach_comments(doc: Document, comments: list[Token]) -> None:
    """Give each comment to the item whose line it ends (trailing), else to the file's header when it comes
    before ``extends``, else to the next item in the same block (leading), else to the enclosing block's closing
    brace, else to the end of the file."""
    items: list[Any] = []
    blocks: list[Block] = []

    def walk(nodes: list[Any]) -> None:
        for n in nodes:
            items.append(n)
            if isinstance(n, Block):
                blocks.append(n)
                walk(n.items)

    walk(doc.items)
    ends = {}
    for it in items:
        if isinstance(it, Attribute):
            ends.setdefault(it.end_line, it)
        elif not it.items and it.end_line == it.span.line:
            ends.setdefault(it.end_line, it)
    for c in sorted(comments, key=lambda t: (t.line, t.column)):
        text = c.value.rstrip()
        owner = ends.get(c.line) or next((b for b in blocks if b.span.line == c.line), None)
        if owner is not None and owner.span.col < (c.column or 0):
            owner.trailing = text
            continue
        enclosing = [b for b in blocks if b.span.line < c.line <= b.end_line]
        inner = enclosing[-1] if enclosing else None
        if inner is None and doc.extends and c.line < doc.extends[0][1].line:
            doc.header_comments.append(text)  # a file's header stays above its `extends` line
            continue
        siblings = inner.items if inner is not None else doc.items
        nxt = next((it for it in siblings if it.span.line > c.line), None)
        if nxt is not None:
            nxt.comments.append(text)
        elif inner is not None:
            inner.inner_trailing.append(text)
        else:
            doc.footer_comments.append(text)


def _mark_blank_lines(text: str, doc: Document) -> None:
    lines = text.split("\n")

    def blank_above(line: int, n_comments: int) -> bool:
        i = line - 2 - n_comments
        return 0 <= i < len(lines) and lines[i].strip() == ""

    def walk(nodes: list[Any]) -> None:
        for n in nodes:
            n.blank_before = blank_above(n.span.line, len(n.comments))
            if isinstance(n, Block):
                walk(n.items)

    walk(doc.items)


_COMMENT_SINKS: list[list[Token]] = []


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=False, lexer_callbacks={"COMMENT": lambda tok: _COMMENT_SINKS[-1].append(tok)})


def parse_text(text: str, path: str = "<recipe>") -> Document:
    """Parse recipe text into a syntax tree; syntax errors raise ParseError with a located diagnostic."""
    comments: list[Token] = []
    _COMMENT_SINKS.append(comments)
    try:
        tree = _lark().parse(text)
        doc = _ToAst(path).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, ParseError):
            e.orig_exc.sources.setdefault(path, text)
            raise e.orig_exc from None
        raise
    except UnexpectedInput as e:
        raise _syntax_error(e, text, path) from None
    finally:
        _COMMENT_SINKS.pop()
    _attach_comments(doc, comments)
    _mark_blank_lines(text, doc)
    return doc


def _unclosed_brace(text: str) -> Optional[tuple[int, int]]:
    """Line and column of the last '{' or '[' that is never closed (strings and comments skipped)."""
    stack: list[tuple[int, int]] = []
    line, col, i = 1, 1, 0
    while i < len(text):
        c = text[i]
        if text.startswith('"""', i):
            j = text.find('"""', i + 3)
            seg = text[i:(j + 3 if j >= 0 else len(text))]
        elif c == '"':
            m = re.match(r'"([^"\\\n]|\\.)*"?', text[i:])
            seg = m.group(0) if m else c
        elif c == "#":
            j = text.find("\n", i)
            seg = text[i:(j if j >= 0 else len(text))]
        else:
            seg = c
            if c in "{[":
                stack.append((line, col))
            elif c in "}]" and stack:
                stack.pop()
        for ch in seg:
            if ch == "\n":
                line, col = line + 1, 1
            else:
                col += 1
        i += len(seg)
    return stack[-1] if stack else None


def _syntax_error(e: UnexpectedInput, text: str, path: str) -> ParseError:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    hint: Optional[str] = None
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        msg = f"unexpected character {ch!r}"
        if ch == '"':
            msg, hint = "unterminated string", "close the string with \" on the same line, or use \"\"\"...\"\"\""
        elif ch == "\\" or ch == "'":
            hint = "strings use double quotes"
    elif isinstance(e, (UnexpectedToken, UnexpectedEOF)):
        tok = getattr(e, "token", None)
        expected = sorted({TOKEN_NAMES.get(t, t) for t in (getattr(e, "expected", None) or [])})
        found = "end of file" if tok is None or tok.type == "$END" else repr(tok.value)
        msg = f"unexpected {found}"
        if expected:
            msg += f", expected {', '.join(expected[:6])}{' or more' if len(expected) > 6 else ''}"
        if tok is None or tok.type == "$END":
            lines = text.rstrip().split("\n")
            line, col = len(lines), len(lines[-1]) + 1
            opened = _unclosed_brace(text)
            if opened:
                hint = f"the brace opened at line {opened[0]}, column {opened[1]} is never closed"
        elif tok.type == "NAME" and "'='" in expected:
            hint = "an attribute is written NAME = VALUE"
        elif tok.type == "RBRACE" and _unclosed_brace(text) is None and text.count("}") > text.count("{"):
            hint = "this '}' closes nothing"
    else:  # pragma: no cover
        msg = str(e).splitlines()[0]
    return ParseError(msg, [Diagnostic(msg, Span(path, line, col, col + 1), hint)], {path: text})


# ------------------------------------------------------------------------------------- syntax tree -> dict

SpanMap = dict[tuple[Any, ...], tuple[Span, Span]]  # spec path -> (span of the name, span of the value)
FUNCTIONS = ("env", "file")


class _Converter:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.spans: SpanMap = {}
        self.diags: list[Diagnostic] = []

    def error(self, message: str, span: Span, hint: Optional[str] = None) -> None:
        self.diags.append(Diagnostic(message, span, hint))

    def value(self, v: Value, path: tuple[Any, ...]) -> Any:
        if v.kind in ("string", "number", "bool"):
            return v.value
        if v.kind == "name":
            parts = v.value.split(".")
            if len(parts) == 1:
                return v.value
            if len(parts) == 2:
                return S.Ref(parts[0], parts[1])
            try:
                return E.metric_from_name(v.value)
            except E.ExprSyntaxError as e:
                self.error(str(e), v.span)
                return None
        if v.kind == "list":
            out = []
            for i, item in enumerate(v.value):
                self.spans[path + (i,)] = (item.span, item.span)
                out.append(self.value(item, path + (i,)))
            return out
        if v.kind == "object":
            return self.pairs(v.value, path)
        if v.kind == "tagged":
            tag, pairs = v.value
            self.spans[path + (tag,)] = (v.span, v.span)
            return {"type": tag, **self.pairs(pairs, path)}
        if v.kind == "call":
            return self.call(v, path)
        if v.kind == "expr":
            return v.value
        raise AssertionError(v.kind)  # pragma: no cover

    def pairs(self, pairs: list[Pair], path: tuple[Any, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in pairs:
            if p.key in out:
                self.error(f"{p.key!r} is given twice", p.span)
            self.spans[path + (p.key,)] = (p.span, p.value.span)
            out[p.key] = self.value(p.value, path + (p.key,))
        return out

    def call(self, v: Value, path: tuple[Any, ...]) -> Any:
        fn, args = v.value
        if fn not in FUNCTIONS:
            self.error(f"unknown function {fn}()", v.span, S.suggest(fn, FUNCTIONS) or "functions: env(\"NAME\"), file(\"PATH\")")
            return None
        if len(args) != 1 or args[0].kind != "string":
            self.error(f"{fn}() takes one string", v.span)
            return None
        arg = args[0].value
        if fn == "env":
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", arg):
                self.error(f"{arg!r} is not an environment variable name", args[0].span)
            return S.SecretRef(arg)
        return S.FileRef(arg)

    def block_body(self, block: Block, path: tuple[Any, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in block.items:
            if isinstance(item, Attribute):
                name, val_span = item.name, item.value.span
                if "." in name:
                    self.error(f"{name!r} is not an attribute name", item.span)
                    continue
                if item.value.kind == "name" and item.value.value == "null":
                    # `name = null`: left unset (its default), e.g. to drop an attribute a base recipe sets
                    if name in out:
                        self.error(f"attribute {name!r} is set twice in this block", item.span)
                    out.pop(name, None)
                    continue
                value = self.value(item.value, path + (name,))
            else:  # a nested block is an object attribute: `split { by = word }`, `store pgvector { ... }`
                name, val_span = item.kind, item.span
                value = self.block_body(item, path + (name,))
                if item.label:
                    self.spans[path + (name, item.label)] = (item.label_span or item.span, item.span)
                    value = {"type": item.label, **value}
            if name in out:
                self.error(f"attribute {name!r} is set twice in this block", item.span)
            self.spans[path + (name,)] = (item.span, val_span)
            out[name] = value
        return out

    def document(self, doc: Document) -> dict[str, Any]:
        domains = [it for it in doc.items if isinstance(it, Block) and it.kind == "domain"]
        for it in doc.items:
            if not (isinstance(it, Block) and it.kind == "domain"):
                what = f"block {it.kind}" if isinstance(it, Block) else f"attribute {it.name}"
                self.error(f"{what} must be inside the domain block", it.span,
                           "a recipe is one `domain NAME { ... }` block wrapping the others")
        if not domains:
            span = Span(doc.path, 1, 1)
            self.error("the recipe has no domain block", span, "write `domain NAME { ... }` around the blocks")
            return {}
        for extra in domains[1:]:
            self.error("only one domain block is allowed per recipe", extra.span)
        dom = domains[0]
        if not dom.label:
            self.error("the domain block needs a name: domain NAME { ... }", dom.span)
        data: dict[str, Any] = {"name": dom.label or ""}
        self.spans[()] = (dom.span, dom.span)
        self.spans[("name",)] = (dom.label_span or dom.span, dom.label_span or dom.span)
        for item in dom.items:
            if isinstance(item, Attribute):
                if item.name != "description":
                    kind_hint = S.suggest(item.name, ("description",) + S.KINDS)
                    self.error(f"unknown domain attribute {item.name!r}", item.span,
                               kind_hint or "the domain block takes `description` and blocks")
                    continue
                self.spans[(item.name,)] = (item.span, item.value.span)
                data[item.name] = self.value(item.value, (item.name,))
                continue
            if item.kind not in S.KINDS:
                self.error(f"unknown block kind {item.kind!r}", item.span,
                           S.suggest(item.kind, S.KINDS) or f"block kinds: {', '.join(S.KINDS)}")
                continue
            label = item.label
            if label is None:
                if item.kind not in S.UNLABELLED:
                    self.error(f"a {item.kind} block needs a label: {item.kind} NAME {{ ... }}", item.span)
                    continue
                label = S.DEFAULT_LABEL
            group = data.setdefault(item.kind, {})
            if label in group:
                self.error(f"duplicate block {item.kind}.{label}", item.label_span or item.span,
                           "labels must be unique within a kind")
                continue
            path = (item.kind, label)
            self.spans[(item.kind,)] = (item.span, item.span)
            self.spans[path] = (item.label_span or item.span, item.span)
            group[label] = self.block_body(item, path)
        return data


# ------------------------------------------------------------------------------------------------ extends


def _merge_blocks(base: Block, child: Block) -> None:
    """Child attributes override the base's one by one; child blocks replace or add blocks."""
    index = {(_key(it)): i for i, it in enumerate(base.items)}
    for it in child.items:
        k = _key(it)
        if k in index and isinstance(it, Block) and isinstance(base.items[index[k]], Block) and base.kind == "domain":
            _merge_blocks(base.items[index[k]], it)  # type: ignore[arg-type]
        elif k in index:
            base.items[index[k]] = it
        else:
            index[k] = len(base.items)
            base.items.append(it)
    base.label, base.label_span = child.label, child.label_span


def _key(it: Union[Attribute, Block]) -> tuple[str, ...]:
    if isinstance(it, Attribute):
        return ("=", it.name)
    return (it.kind, it.label or S.DEFAULT_LABEL)


def read_document(path: Path, sources: dict[str, str], chain: tuple[Path, ...] = ()) -> Document:
    """Parse a recipe and everything it extends into one merged syntax tree."""
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{shown}: no such recipe") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{shown}: cannot read the recipe ({e})") from None
    sources[shown] = text
    doc = parse_text(text, shown)
    if not doc.extends:
        return doc
    merged: Optional[Document] = None
    for rel, span in doc.extends:
        target = (path.parent / rel).resolve()
        if target in chain + (path.resolve(),):
            raise SpecError("extends cycle", [Diagnostic(f"extends {rel!r} makes a cycle", span)], sources)
        if not target.is_file():
            raise SpecError("missing base", [Diagnostic(f"extends {rel!r}: no such file", span)], sources)
        base = read_document(target, sources, chain + (path.resolve(),))
        if merged is None:
            merged = base
        else:
            _merge_documents(merged, base)
    assert merged is not None
    _merge_documents(merged, doc)
    merged.path = doc.path
    return merged


def _merge_documents(base: Document, child: Document) -> None:
    base_dom = next((b for b in base.items if isinstance(b, Block) and b.kind == "domain"), None)
    child_dom = next((b for b in child.items if isinstance(b, Block) and b.kind == "domain"), None)
    if base_dom is None or child_dom is None:
        base.items.extend(child.items)
        return
    _merge_blocks(base_dom, child_dom)
    base.items.extend(it for it in child.items if it is not child_dom)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------- validation


def locate(spans: SpanMap, loc: tuple[Any, ...], use_key: bool = False) -> Optional[Span]:
    """The span of the deepest part of ``loc`` that the recipe wrote: its value, or its name when ``use_key``
    or when the part at fault was not written at all (a missing attribute points at its block)."""
    path: tuple[Any, ...] = ()
    for part in loc:
        if path + (part,) in spans:
            path = path + (part,)
    if path not in spans:
        return None
    key, value = spans[path]
    written = [p for p in loc if not _is_internal(p)]
    return value if not use_key and len(path) == len(written) else key


def focus(span: Optional[Span], text: Optional[str], sources: dict[str, str]) -> Optional[Span]:
    """Narrow ``span`` to where ``text`` occurs inside it (e.g. the one metric of a gate that is at fault)."""
    if span is None or not text or span.path not in sources:
        return span
    lines = sources[span.path].split("\n")
    for n in range(span.line, min(span.line + 20, len(lines)) + 1):
        line = lines[n - 1]
        start = line.find(text, span.col - 1 if n == span.line else 0)
        if start >= 0:
            return Span(span.path, n, start + 1, start + 1 + len(text))
    return span


def _is_internal(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("function-before", "function-after", "tagged-union"))


def _model_at(loc: tuple[Any, ...]) -> Optional[type]:
    """The pydantic model class whose attributes live at ``loc`` (for did-you-mean on unknown attributes)."""
    from pydantic import BaseModel

    if len(loc) < 2 or loc[0] not in S.BLOCK_TYPES:
        return S.Spec if len(loc) <= 1 else None
    candidates: list[Any] = [S.BLOCK_TYPES[loc[0]]]
    for part in loc[2:]:
        tagged = [m for m in candidates if "type" in m.model_fields and m.model_fields["type"].default == part]
        if tagged:  # a union member named by its tag, such as 'pgvector'
            candidates = tagged
            continue
        model = candidates[0]
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            continue
        found = [a for a in _flatten(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return model
        candidates = found
    return candidates[0]


def _flatten(tp: Any) -> list[Any]:
    import typing

    args = typing.get_args(tp)
    if not args:
        return [tp]
    out: list[Any] = []
    for a in args:
        out += _flatten(a)
    return out


def _fields_of(model: type) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]  # type: ignore[attr-defined]


def _describe(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] in S.KINDS:
        return f"{loc[0]}.{loc[1]}" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in loc[2:])
    return ".".join(str(p) for p in loc) or "domain"


def _friendly(err: dict[str, Any], data: dict[str, Any]) -> tuple[tuple[Any, ...], str, Optional[str], bool]:
    """(clean loc, message, hint, point at the name rather than the value)."""
    loc = tuple(p for p in err["loc"] if not _is_internal(p))
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    where = _describe(loc[:-1]) if loc else "domain"
    name = loc[-1] if loc else ""
    if kind == "missing":
        return loc, f"{where} is missing required attribute {name!r}", None, True
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = _fields_of(model) if model is not None else []
        hint = S.suggest(str(name), allowed) or (f"attributes: {', '.join(a for a in allowed if a != 'type')}" if allowed else None)
        return loc, f"unknown attribute {name!r} in {where}", hint, True
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        got = err.get("input")
        hint = S.suggest(str(got), options) if isinstance(got, str) else None
        return loc, f"{_describe(loc)}: {got!r} is not one of {', '.join(options)}", hint, False
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return loc, f"{_describe(loc)}: {msg}", None, False
    if kind == "string_pattern_mismatch" and loc and loc[-1] not in ("table",):
        return loc, f"{_describe(loc)}: {err.get('input')!r} is not a valid name (letters, digits and _)", None, False
    return loc, f"{_describe(loc)}: {msg[0].lower() + msg[1:] if msg else msg}", None, False


def validate(data: dict[str, Any], spans: SpanMap, sources: dict[str, str], base_dir: Path,
             check_files: bool = True) -> S.Spec:
    from pydantic import ValidationError

    try:
        return S.Spec.model_validate(data, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as e:
        field_diags: list[Diagnostic] = []
        problems: list[S.Problem] = []
        for err in e.errors():
            if err["type"] == "spec_semantic":
                problems += err["ctx"]["problems"]
                continue
            loc, msg, hint, use_key = _friendly(err, data)
            field_diags.append(Diagnostic(msg, locate(spans, loc, use_key), hint))
        if not problems:
            problems = _lenient_problems(data, base_dir, check_files)
        semantic = [Diagnostic(p.message, focus(locate(spans, tuple(p.path)), p.focus, sources), p.hint)
                    for p in problems]
        diags = _sorted(_dedupe_union_errors(field_diags) + list(dict.fromkeys(semantic)))
        raise SpecError(f"{len(diags)} error(s) in the spec", diags, sources) from None


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
                except ValidationError:
                    fields = {aliases.get(k, k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
                    known = {k: v for k, v in fields.items() if k in cls.model_fields}
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
    """A loaded recipe: the validated spec, plus what is needed to point back into the source."""

    def __init__(self, spec: S.Spec, spans: SpanMap, sources: dict[str, str], path: Path) -> None:
        self.spec, self.spans, self.sources, self.path = spec, spans, sources, path

    def diagnostics(self, problems: list[S.Problem]) -> list[Diagnostic]:
        return [Diagnostic(p.message, focus(locate(self.spans, tuple(p.path)), p.focus, self.sources), p.hint)
                for p in problems]


def load_recipe(path: Union[str, Path], check_files: bool = True) -> Recipe:
    path = Path(path)
    sources: dict[str, str] = {}
    doc = read_document(path, sources)
    base_dir = path.resolve().parent
    conv = _Converter(base_dir)
    data = conv.document(doc)
    spec = _validate_all(conv, data, sources, base_dir, check_files)
    return Recipe(spec, conv.spans, sources, path)


def _validate_all(conv: _Converter, data: dict[str, Any], sources: dict[str, str], base_dir: Path,
                  check_files: bool) -> S.Spec:
    """Validate even when the conversion found errors, so that every error is shown at once."""
    try:
        spec = validate(data, conv.spans, sources, base_dir, check_files)
    except SpecError as e:
        if not conv.diags:
            raise
        diags = _sorted(conv.diags + e.diagnostics)
        raise SpecError(f"{len(diags)} error(s) in the recipe", diags, sources) from None
    if conv.diags:
        raise SpecError(f"{len(conv.diags)} error(s) in the recipe", conv.diags, sources)
    return spec


def load(path: Union[str, Path], check_files: bool = True) -> S.Spec:
    return load_recipe(path, check_files).spec


def loads(text: str, base_dir: Union[str, Path] = ".", path: str = "<recipe>", check_files: bool = False) -> S.Spec:
    """Parse and validate recipe text (no extends)."""
    sources = {path: text}
    doc = parse_text(text, path)
    conv = _Converter(Path(base_dir).resolve())
    data = conv.document(doc)
    return _validate_all(conv, data, sources, Path(base_dir).resolve(), check_files)
