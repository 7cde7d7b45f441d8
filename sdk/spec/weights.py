"""Where a model needs weights: a reference to an untrained architecture (``base_model X { architecture = llama
{ ... } }``, nothing but a shape until a pretrain step trains it) is an error wherever the block will load the
model's weights (train from it, generate with it, route to it, answer with it).

The rule is read from the declarations, not from a list of places: a field that names the architecture's own
kind (``pretrain { from = base_model.X }``: ``ref_of("base_model", "pretrain")``) takes its untrained form; a
field that takes any model or system (``ref_of("@model")``, ``ref_of("@system")``) needs one with weights. So a
plugin's kind follows the same rule as the built-in ones.
"""

from __future__ import annotations

import typing
from typing import Any, Iterator, Optional

from pydantic import BaseModel
from pydantic.json_schema import WithJsonSchema

from sdk.spec.values import Problem, Ref, refs_in


def from_chain(spec: Any, block: Any) -> Iterator[tuple[Optional[Ref], Any]]:
    """``(ref, block)`` for ``block`` itself (ref None), then each block its ``from`` reaches, nearest first, up to
    the base model it starts from; a reference to nothing, or a cycle, ends it."""
    ref: Optional[Ref] = None
    seen: set[int] = set()
    while block is not None and id(block) not in seen:
        seen.add(id(block))
        yield ref, block
        ref = getattr(block, "from_", None)
        block = spec.get(ref) if ref is not None and spec.has(ref) else None


def untrained(spec: Any, ref: Ref) -> bool:
    """Whether ``ref`` names a block that is an architecture with no weights yet."""
    block = spec.get(ref) if spec.has(ref) else None
    return getattr(block, "architecture", None) is not None


def _members(tp: Any) -> list[Any]:
    """The types inside an annotation (through Annotated, Optional/Union, list and dict), ``tp`` itself first."""
    out, todo = [], [tp]
    while todo:
        t = todo.pop(0)
        out.append(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            continue
        todo += [a for a in typing.get_args(t) if not isinstance(a, (str, int, float, bool, WithJsonSchema))
                 and a is not None and not isinstance(a, dict)]
    return out


def _kinds_in(tp: Any, metadata: list[Any]) -> set[str]:
    """The kinds named by the reference types inside an annotation (their ``x-kinds``)."""
    found: set[str] = set()
    for t in _members(tp):
        for m in list(getattr(t, "__metadata__", ())) + (metadata if t is tp else []):
            if isinstance(m, WithJsonSchema) and isinstance(m.json_schema, dict):
                found.update(m.json_schema.get("x-kinds") or [])
    return found


def declared_kinds(cls: type, path: tuple[Any, ...]) -> set[str]:
    """The kinds that the value at ``path`` (attribute names, list indexes and dict keys below a block class) is
    declared to take, as written in its ``ref_of(...)``: ``{"base_model", "pretrain"}`` or ``{"@model"}``."""
    tp: Any = cls
    metadata: list[Any] = []
    for step in path:
        if not isinstance(step, str):
            continue  # a list index: the members are read below
        field = next((f for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)
                      for n, f in m.model_fields.items() if step in (n, f.alias)), None)
        if field is not None:
            tp, metadata = field.annotation, list(field.metadata)
        # else a dict key (route targets): stay on the dict's type
    return _kinds_in(tp, metadata)


def _attribute(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path if isinstance(p, str))


def weight_problems(spec: Any, taken: set[tuple[Any, ...]]) -> list[Problem]:
    """An untrained architecture named where weights are needed, at each such reference; ``taken``: paths that
    already have a problem (an eval's own, more precise message), not repeated."""
    out: list[Problem] = []
    for kind, label, block in spec.blocks():
        for path, ref in refs_in(block, (kind, label)):
            if path in taken or not untrained(spec, ref) or ref.kind in declared_kinds(type(block), path[2:]):
                continue
            where: str | None = _attribute(path)
            out.append(Problem(path=path, message=f"{ref} is an architecture with no weights (llama {{ ... }}), and "
                                                  f"{where} needs a model with weights",
                               hint=f"train it first with pretrain NAME {{ from = {ref}  corpus = corpus.X }} and "
                                    "name pretrain.NAME here (or give the base model an id or a path)"))
    return out
