"""The domain spec: the one intermediate representation, and the only place where validation lives.

Both the DSL (``dsl.parser``) and the Python builder (``sdk.builder``) end in :meth:`Spec.model_validate`.
A spec is a ``domain`` holding blocks grouped by kind and keyed by label::

    {"name": "telecom", "description": "...",
     "base_model": {"llama3": {...}}, "corpus": {"specs": {...}}, ..., "route": {"default": {...}}}

Each block kind is declared once, beside its block class (``sdk/spec/blocks/``, see :mod:`sdk.spec.kinds`);
``Spec`` gets one field per declared kind, plugins' kinds included (entry point group ``dsl.kinds``), and kinds
registered later too: it is built lazily, again whenever the registry has changed. Every model
is frozen, strict (no coercion: a boolean is true/false, a number a number) and forbids unknown attributes.

Layout: ``values`` (Ref, SecretRef, FileRef, expressions, Block), ``objects`` (endpoint, llama, lora, ...),
``kinds`` (declarations and their registry), ``paths`` (confined, bounded file access), ``blocks/`` (one module
per built-in kind), ``domain`` (Spec and its cross-block checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdk.spec import kinds as _kinds  # noqa: E402

import sdk.spec.blocks  # noqa: E402,F401  isort: skip  (declares the built-in kinds, in their order)
from sdk.spec.blocks.base_model import BaseModelBlock  # noqa: E402,F401  (declares the built-in kinds)
from sdk.spec.blocks.compute import ComputeBlock  # noqa: E402,F401
from sdk.spec.blocks.corpus import CorpusBlock  # noqa: E402,F401
from sdk.spec.blocks.dataset import DatasetBlock  # noqa: E402,F401
from sdk.spec.blocks.eval import METRIC_NAMES, EvalBlock  # noqa: E402,F401
from sdk.spec.blocks.finetune import FinetuneBlock  # noqa: E402,F401
from sdk.spec.blocks.pretrain import PretrainBlock  # noqa: E402,F401
from sdk.spec.blocks.rag import RagBlock  # noqa: E402,F401
from sdk.spec.blocks.route import RouteBlock  # noqa: E402,F401
from sdk.spec.blocks.serve import ServeBlock  # noqa: E402,F401
from sdk.spec.kinds import Kind, declare, get_kind, kinds_with_role, register_kind  # noqa: F401
from sdk.spec.objects import (  # noqa: F401
    DeepSpeed,
    Endpoint,
    FieldMap,
    Fsdp,
    IndexStore,
    Llama,
    Lora,
    Memory,
    PgVector,
    SGLangOptions,
    Split,
    TrainCommon,
)
from sdk.spec.values import (  # noqa: F401
    DEFAULT_LABEL,
    Block,
    Expr,
    FileRef,
    Fraction,
    Label,
    PositiveInt,
    Problem,
    Ref,
    Secret,
    SecretRef,
    TextOrFile,
    parse_ref,
    ref_of,
    refs_in,
    refs_of,
    suggest,
)

_kinds.load_plugins()

from sdk.spec.domain import build_spec_class  # noqa: E402

# ``Spec`` and the name tables below are derived from the kinds registered so far, and derived again once another
# kind is registered (a plugin's, or one a program declares after importing sdk.spec): read them as attributes of
# this module (``S.Spec``), not copied at import.
_DERIVED = ("Spec", "KINDS", "DOMAIN_ATTRIBUTES", "UNLABELLED", "MODEL_KINDS", "SYSTEM_KINDS", "BLOCK_TYPES")
_built: dict[str, Any] = {}

if TYPE_CHECKING:  # pragma: no cover
    Spec: Any
    KINDS: tuple[str, ...]
    DOMAIN_ATTRIBUTES: tuple[str, ...]
    UNLABELLED: tuple[str, ...]
    MODEL_KINDS: tuple[str, ...]
    SYSTEM_KINDS: tuple[str, ...]
    BLOCK_TYPES: dict[str, type]


def _derived() -> dict[str, Any]:
    global _built
    key = tuple((k.name, id(k.block)) for k in _kinds.all_kinds())
    if _built.get("key") != key:  # built whole, then swapped in: a reader never sees half of it
        spec = build_spec_class()
        kinds = _kinds.kind_names()
        _built = dict(
            key=key, Spec=spec, KINDS=kinds,
            DOMAIN_ATTRIBUTES=tuple(n for n in spec.model_fields if n != "name" and n not in kinds),
            UNLABELLED=_kinds.unlabelled(), MODEL_KINDS=tuple(_kinds.kinds_with_role("model")),
            SYSTEM_KINDS=tuple(_kinds.kinds_with_role("system")) + ("endpoint",),
            BLOCK_TYPES={k.name: k.block for k in _kinds.all_kinds()})
    return _built


def __getattr__(name: str) -> Any:
    if name in _DERIVED:
        return _derived()[name]
    raise AttributeError(f"module 'sdk.spec' has no attribute {name!r}")


def json_schema() -> dict[str, Any]:
    return _derived()["Spec"].model_json_schema(by_alias=True)
