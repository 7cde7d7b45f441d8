"""Value types of the spec: references, secrets, files, expressions, and the base of every block.

Values that are not plain JSON have their own types: ``Ref`` (``kind.label``), ``SecretRef`` (``env("NAME")``),
``FileRef`` (``file("path")``) and expression nodes (:mod:`sdk.expr`).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from sdk import expr as _expr

DEFAULT_LABEL = "default"
LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class Ref:
    """A reference ``kind.label`` to another block."""

    kind: str
    label: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.label}"

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.label}"


@dataclass(frozen=True)
class SecretRef:
    """``env("NAME")``: a secret whose value is read from the environment only when a step runs."""

    env: str

    def resolve(self) -> str:
        try:
            return os.environ[self.env]
        except KeyError:
            raise KeyError(f"environment variable {self.env} is not set (needed by env({self.env!r}))") from None

    def __repr__(self) -> str:  # never the value
        return f'env("{self.env}")'


@dataclass(frozen=True)
class FileRef:
    """``file("prompts/x.j2")``: a path relative to the recipe's folder; its text is read when used."""

    path: str

    def read(self, base_dir: Path) -> str:
        return (Path(base_dir) / self.path).read_text(encoding="utf-8")


def _parse_ref(v: Any) -> Ref:
    if isinstance(v, Ref):
        return v
    if isinstance(v, dict) and set(v) == {"ref"}:
        v = v["ref"]
    if isinstance(v, str):
        parts = v.split(".")
        if len(parts) == 2 and all(p.replace("_", "a").replace("-", "a").isalnum() for p in parts):
            return Ref(parts[0], parts[1])
    # only a string is echoed: an object (an endpoint written by mistake) may hold a secret
    got = repr(v) if isinstance(v, (str, int, float, bool)) or v is None else f"an object ({type(v).__name__})"
    raise PydanticCustomError("ref", "expected a reference KIND.LABEL (e.g. finetune.sip), got {value}", {"value": got})


def _dump_ref(v: Any) -> Any:
    """A reference dumps as its text. Pydantic hands a union's first member's serializer every value of the union,
    so an Endpoint in a Union[ref, Endpoint] field arrives here too: it dumps as its own object."""
    return str(v) if isinstance(v, Ref) else v.model_dump(mode="json", exclude_none=False)


def _ref_of(*kinds: str) -> Any:
    """A reference to a block of one of ``kinds``. A name starting with ``@`` is a role (``@model``, ``@system``):
    every registered kind with that role fits, third-party kinds included (looked up when a value is checked)."""

    def allowed() -> list[str]:
        from sdk.spec.kinds import kinds_with_role

        out: list[str] = []
        for k in kinds:
            out += kinds_with_role(k[1:]) if k.startswith("@") else [k]
        return list(dict.fromkeys(out))

    def check(v: Any) -> Ref:
        ref = _parse_ref(v)
        names = allowed()
        if ref.kind not in names:
            raise PydanticCustomError(
                "ref_kind",
                "{ref} is a reference to a {kind} block, but only {allowed} fits here",
                {"ref": str(ref), "kind": ref.kind, "allowed": " or ".join(names)},
            )
        return ref

    described = ", ".join(k[1:] + " kinds" if k.startswith("@") else k for k in kinds)
    return Annotated[
        Ref,
        BeforeValidator(check),
        PlainSerializer(_dump_ref),
        WithJsonSchema({"type": "string", "pattern": r"^[a-z_]+\.[A-Za-z_][A-Za-z0-9_-]*$",
                        "description": f"reference KIND.LABEL to a block of: {described}",
                        "x-kinds": list(kinds)}),
    ]


ref_of = _ref_of


def _parse_secret(v: Any) -> SecretRef:
    if isinstance(v, SecretRef):
        return v
    if isinstance(v, dict) and set(v) == {"env"} and isinstance(v["env"], str):
        return SecretRef(v["env"])
    raise PydanticCustomError(
        "secret", "a secret must be written env(\"NAME\") so that it is never stored in the recipe", {}
    )


Secret = Annotated[
    SecretRef,
    BeforeValidator(_parse_secret),
    PlainSerializer(lambda s: {"env": s.env}, return_type=dict),
    WithJsonSchema({"type": "object", "properties": {"env": {"type": "string"}}, "required": ["env"]}),
]


def _parse_file(v: Any) -> Any:
    if isinstance(v, (FileRef, str)):
        return v
    if isinstance(v, dict) and set(v) == {"file"} and isinstance(v["file"], str):
        return FileRef(v["file"])
    raise PydanticCustomError("text", 'expected a string or file("PATH")', {})


TextOrFile = Annotated[
    Union[str, FileRef],
    BeforeValidator(_parse_file),
    PlainSerializer(lambda v: {"file": v.path} if isinstance(v, FileRef) else v),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"file": {"type": "string"}}}]}
    ),
]


def _parse_expr(v: Any) -> Any:
    if isinstance(v, (_expr.Num, _expr.Bool, _expr.Metric, _expr.BinOp, _expr.Not, _expr.Neg)):
        return _finite(v)
    if isinstance(v, bool):
        return _expr.Bool(v)
    if isinstance(v, (int, float)):
        return _finite(_expr.Num(float(v)))
    if isinstance(v, str):
        try:
            return _finite(_expr.parse(v))
        except _expr.ExprSyntaxError as e:
            raise PydanticCustomError("expr", "invalid expression: {msg}", {"msg": str(e)}) from None
    raise PydanticCustomError("expr", "expected an expression, got {value}", {"value": repr(v)})


def _finite(node: Any) -> Any:
    """An expression whose numbers are all finite (``1e400`` reads as inf: refused, as in every other number)."""
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, _expr.Num) and not math.isfinite(n.value):
            raise PydanticCustomError("expr", "a number in the expression is not finite (a number is at most about "
                                      "1.8e308 in size, and never inf or nan)", {})
        todo += [getattr(n, a) for a in ("left", "right", "operand") if getattr(n, a, None) is not None]
    return node


Expr = Annotated[
    Any,
    BeforeValidator(_parse_expr),
    PlainSerializer(_expr.to_text, return_type=str),
    WithJsonSchema({"type": "string", "description": "expression, e.g. rag.docs.accuracy >= 0.5"}),
]

# Bounds the libraries have: steps, sizes and counts are C ints in torch and the trainers; a seed is numpy's
# (0 .. 2**32-1; torch takes more, numpy's RandomState refuses it at run time with a bare ValueError).
MAX_INT = 2**31 - 1
MAX_SEED = 2**32 - 1
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Block(BaseModel):
    # allow_inf_nan=False: 1e400 (which parses as inf), inf and nan are refused in every number of every block
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False)


class Problem(BaseModel):
    """One semantic problem found by a cross-block check, with the path of the value at fault."""

    path: tuple[Any, ...]
    message: str
    hint: Optional[str] = None
    focus: Optional[str] = None  # text inside the value that is at fault (e.g. one metric of a gate)
    severity: str = "error"  # "warning": shown by the plan, which goes on (a legitimate but doubtful choice)


def suggest(word: str, options: Any) -> Optional[str]:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


Label = Annotated[str, Field(pattern=LABEL_PATTERN)]


def off_default(block: Any, names: Any) -> list[str]:
    """The attributes of ``names`` that ``block`` sets to something other than their default. Compared with the
    defaults, not with what was written: a block read back from its manifest sets every attribute."""
    fields = type(block).model_fields
    return [n for n in names if getattr(block, n) != fields[n].get_default(call_default_factory=True)]


def refuse_unread(names: list[str], message: str, joiner: str = " and ", **params: Any) -> None:
    """Options nothing reads are mistakes, not settings kept for later: when ``names`` holds any, one "incompatible"
    error whose ``message`` names them as ``{names}`` (with ``{verb}``: apply or applies) and ``params``."""
    if names:
        verb = "apply" if len(names) > 1 else "applies"
        raise PydanticCustomError("incompatible", message, {"names": joiner.join(names), "verb": verb, **params})


def refs_in(value: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Ref]]:
    """Every Ref inside a block, with its path."""
    out: list[tuple[tuple[Any, ...], Ref]] = []
    if isinstance(value, Ref):
        out.append((path, value))
    elif isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            out += refs_in(getattr(value, name), path + (field.alias or name,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += refs_in(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += refs_in(v, path + (k,))
    return out


def refs_of(block: Any) -> list[Ref]:
    return [r for _, r in refs_in(block, ())]

parse_ref = _parse_ref
