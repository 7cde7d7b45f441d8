"""Syntax tree -> the plain dict that ``sdk.spec.Spec`` validates, with a map from spec paths to source spans.

Block rules are checked here, where the labels are written: every kind but ``sdk.spec.UNLABELLED`` needs a
label, those take none, and reserved words are never labels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from dsl.ast import Attribute, Block, Document, Pair, Value
from dsl.locate import SpanMap
from sdk import expr as E
from sdk import spec as S
from sdk.errors import Diagnostic, Span

RESERVED = ("true", "false", "null", "and", "or", "not", "extends", "env", "file")


# ------------------------------------------------------------------------------------- syntax tree -> dict

FUNCTIONS = ("env", "file")


class Converter:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.spans: SpanMap = {}
        self.diags: list[Diagnostic] = []
        self.values: dict[tuple[Any, ...], Value] = {}  # path -> the value as written (for type hints)
        self.nulls: dict[tuple[Any, ...], Span] = {}  # path -> span of a `null` that unset it

    def error(self, message: str, span: Span, hint: Optional[str] = None) -> None:
        self.diags.append(Diagnostic(message, span, hint))

    def value(self, v: Value, path: tuple[Any, ...]) -> Any:
        self.values[path] = v
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
                    self.nulls[path + (name,)] = val_span
                    self.spans[path + (name,)] = (item.span, val_span)
                    continue
                value = self.value(item.value, path + (name,))
            else:  # a nested block is an object attribute: `split { by = word }`, `store pgvector { ... }`
                name, val_span = item.kind, item.span
                value = self.block_body(item, path + (name,))
                if item.label:
                    self.check_label(item)
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
            first = doc.items[0].span if doc.items else Span(doc.path, 1, 1)
            self.diags = [Diagnostic("the recipe has no domain block", first,
                                     "write `domain NAME { ... }` around the blocks" if doc.items else
                                     "write `domain NAME { ... }` with the blocks inside")]
            return {}
        for extra in domains[1:]:
            self.error("only one domain block is allowed per recipe", extra.span)
        dom = domains[0]
        if not dom.label:
            self.error("the domain block needs a name: domain NAME { ... }", dom.span)
        else:
            self.check_label(dom)
        data: dict[str, Any] = {"name": dom.label or ""}
        self.spans[()] = (dom.span, dom.span)
        self.spans[("name",)] = (dom.label_span or dom.span, dom.label_span or dom.span)
        for item in dom.items:
            if isinstance(item, Attribute):
                if item.name not in S.DOMAIN_ATTRIBUTES:
                    kind_hint = S.suggest(item.name, S.DOMAIN_ATTRIBUTES + S.KINDS)
                    self.error(f"unknown domain attribute {item.name!r}", item.span,
                               kind_hint or f"the domain block takes {_words(S.DOMAIN_ATTRIBUTES)} and blocks")
                    continue
                self.spans[(item.name,)] = (item.span, item.value.span)
                data[item.name] = self.value(item.value, (item.name,))
                continue
            if item.kind not in S.KINDS:
                self.error(f"unknown block kind {item.kind!r}", item.span,
                           S.suggest(item.kind, S.KINDS) or f"block kinds: {', '.join(S.KINDS)}")
                continue
            label = item.label
            if label is not None and item.kind in S.UNLABELLED:
                self.error(f"a {item.kind} block takes no label", item.label_span or item.span,
                           f"write `{item.kind} {{ ... }}`: {_words(S.UNLABELLED)} are one per domain")
                label = None
            elif label is not None and not self.check_label(item):
                continue
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


    def check_label(self, block: Block) -> bool:
        if block.label in RESERVED:
            self.error(f"{block.label!r} is a reserved word and cannot be a label", block.label_span or block.span,
                       f"reserved words: {', '.join(RESERVED)}")
            return False
        return True


def _words(names: tuple[str, ...]) -> str:
    """a, b and c"""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)
