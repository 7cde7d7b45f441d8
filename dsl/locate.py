"""From a spec path (as pydantic or ``Spec._check`` reports it) back to the place in the recipe that wrote it."""

from __future__ import annotations

import difflib
import typing
from functools import lru_cache
from typing import Any, Optional

from sdk import spec as S
from sdk.errors import Span

SpanMap = dict[tuple[Any, ...], tuple[Span, Span]]  # spec path -> (span of the name, span of the value)
ALIASES = {"f1_score": "f1", "f1score": "f1", "em": "exact_match", "exact": "exact_match", "acc": "accuracy",
           "ppl": "perplexity", "recall": "recall_at_k", "mean_reciprocal_rank": "mrr", "bf16": "bfloat16",
           "fp16": "float16", "fp32": "float32", "postgres": "pgvector", "postgresql": "pgvector",
           "in_memory": "memory", "inmemory": "memory"}


def near(word: Any, options: Any) -> Optional[str]:
    """``did you mean X?`` for a near miss: a misspelling, a common alias (f1_score), another case or spelling
    of the same name (F1, exact-match), or an option the word starts with."""
    word, options = str(word), [str(o) for o in options]
    norm = word.lower().replace("-", "_")
    for cand in (ALIASES.get(norm), norm, norm.replace("_", "")):
        if cand in options:
            return f"did you mean {cand!r}?"
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:
        match = [o for o in options if len(o) >= 2 and (norm.startswith(o + "_") or o.startswith(norm + "_"))][:1]
    return f"did you mean {match[0]!r}?" if match else None


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
    written = [p for p in loc if not is_internal(p)]
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


def is_internal(part: Any) -> bool:
    """Parts of a pydantic error location that the recipe did not write: validator and union member names."""
    return isinstance(part, str) and ("[" in part or part in ("function-before", "function-after", "tagged-union")
                                      or part in model_names())


@lru_cache(maxsize=1)
def model_names() -> frozenset[str]:
    from pydantic import BaseModel

    seen: set[type] = set()
    todo: list[Any] = [S.Spec]
    while todo:
        m = todo.pop()
        if not (isinstance(m, type) and issubclass(m, BaseModel)) or m in seen:
            continue
        seen.add(m)
        for f in m.model_fields.values():
            todo += flatten(f.annotation)
    return frozenset(m.__name__ for m in seen)


def model_at(loc: tuple[Any, ...]) -> Optional[type]:
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
        found = [a for a in flatten(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return model
        candidates = found
    return candidates[0]


def flatten(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    if not args:
        return [tp]
    out: list[Any] = []
    for a in args:
        out += flatten(a)
    return out


def fields_of(model: type) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]  # type: ignore[attr-defined]


def describe(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] in S.KINDS:
        return f"{loc[0]}.{loc[1]}" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in loc[2:])
    return ".".join(str(p) for p in loc) or "domain"
