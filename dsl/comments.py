"""Comments and blank lines of a parsed recipe, attached to its syntax tree so that ``dsl fmt`` keeps them.

A comment that ends a line of code stays on that line: it belongs to the last item that ends there (an attribute,
a one-line block, or the closing brace of a longer block), or to the block whose opening brace is on that line.
A comment on a line of its own goes above the next item of its block, or before the block's closing brace, or
to the end of the file; comments above ``extends`` stay the file's header.
"""

from __future__ import annotations

from typing import Any, Union

from lark import Token

from dsl.ast import Attribute, Block, Document


def _walk(nodes: list[Any], items: list[Any], blocks: list[Block]) -> None:
    for n in nodes:
        items.append(n)
        if isinstance(n, Block):
            blocks.append(n)
            _walk(n.items, items, blocks)


def _end_col(it: Union[Attribute, Block]) -> int:
    return getattr(it, "end_col", 0) or 0


def attach_comments(doc: Document, comments: list[Token]) -> None:
    items: list[Any] = []
    blocks: list[Block] = []
    _walk(doc.items, items, blocks)
    ends: dict[int, Any] = {}
    for it in items:  # the last item that ends on each line (items come in source order)
        prev = ends.get(it.end_line)
        if prev is None or (it.end_line, _end_col(it)) >= (prev.end_line, _end_col(prev)):
            ends[it.end_line] = it
    for c in sorted(comments, key=lambda t: (t.line, t.column)):
        text = c.value.rstrip()
        col = c.column or 0
        owner = ends.get(c.line)
        if owner is not None and owner.span.col < col and (owner.end_col or 0) <= col:
            if isinstance(owner, Block) and owner.span.line != owner.end_line:
                owner.closing_trailing = _join(owner.closing_trailing, text)
            else:
                owner.trailing = _join(owner.trailing, text)
            continue
        opened = next((b for b in reversed(blocks) if b.span.line == c.line and b.end_line > c.line), None)
        if opened is not None and opened.span.col < col:
            opened.trailing = _join(opened.trailing, text)
            continue
        inside = next((a for a in reversed(items) if isinstance(a, Attribute) and a.span.line == c.line
                       and a.end_line > c.line and a.span.col < col), None)
        if inside is not None:  # after the opening bracket of a value written over several lines
            inside.trailing = _join(inside.trailing, text)
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


def _join(old: Any, new: str) -> str:
    return f"{old} {new}" if old else new


def mark_blank_lines(text: str, doc: Document) -> None:
    """Note where the author left a blank line (above an item and its leading comments, above the footer)."""
    lines = text.split("\n")

    def blank(i: int) -> bool:
        return 0 <= i < len(lines) and lines[i].strip() == ""

    def walk(nodes: list[Any]) -> None:
        for n in nodes:
            n.blank_before = blank(n.span.line - 2 - len(n.comments))
            if isinstance(n, Block):
                walk(n.items)

    walk(doc.items)
    if doc.footer_comments:
        first = next((i for i, ln in enumerate(lines) if ln.strip() == doc.footer_comments[0].strip()
                      and i + 1 > max((it.end_line for it in doc.items), default=0)), None)
        doc.footer_blank = first is not None and blank(first - 1)
