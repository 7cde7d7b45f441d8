"""``extends``: a recipe and every recipe it extends, read and merged into one syntax tree."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from dsl.ast import Attribute, Block, Document
from dsl.syntax import BOM, parse_text
from sdk import spec as S
from sdk.errors import Diagnostic, Span, SpecError
from sdk.spec.paths import unusable


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
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{shown}: no such recipe") from None
    except OSError as e:
        raise SpecError(f"{shown}: cannot read the recipe ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(shown, data, e) from None
    text = text[1:] if text.startswith(BOM) else text
    sources[shown] = text
    doc = parse_text(text, shown)
    if not doc.extends:
        return doc
    merged: Optional[Document] = None
    for rel, span in doc.extends:
        if unusable(rel):  # a NUL byte, a name too long for any system: located, not an internal error
            raise SpecError("bad base", [Diagnostic(f"extends: {unusable(rel)}", span)], sources)
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



def _not_utf8(shown: str, data: bytes, e: UnicodeDecodeError) -> SpecError:
    before = data[:e.start].decode("utf-8", errors="replace")
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    msg = f"the recipe is not UTF-8 text (byte 0x{data[e.start]:02x})"
    text = data.decode("utf-8", errors="replace")
    return SpecError(msg, [Diagnostic(msg, Span(shown, line, col, col + 1), "save the file as UTF-8")],
                     {shown: text})

