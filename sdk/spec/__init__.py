"""The domain spec: the one intermediate representation, and the only place where validation lives.

Both the DSL (``dsl.parser``) and the Python builder (``sdk.builder``) end in :meth:`Spec.model_validate`.
A spec is a ``domain`` holding blocks grouped by kind and keyed by label::

    {"name": "telecom", "description": "...",
     "base_model": {"llama3": {...}}, "corpus": {"specs": {...}}, ..., "route": {"default": {...}}}

Each block kind is declared once, beside its block class (``sdk/spec/blocks/``, see :mod:`sdk.spec.kinds`);
``Spec`` gets one field per declared kind, plugins' kinds included (entry point group ``dsl.kinds``). Every model
is frozen, strict (no coercion: a boolean is true/false, a number a number) and forbids unknown attributes.

Layout: ``values`` (Ref, SecretRef, FileRef, expressions, Block), ``objects`` (endpoint, llama, lora, ...),
``kinds`` (declarations and their registry), ``paths`` (confined, bounded file access), ``blocks/`` (one module
per built-in kind), ``domain`` (Spec and its cross-block checks).
"""

from __future__ import annotations

from typing import Any

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

Spec: Any = build_spec_class()

KINDS: tuple[str, ...] = _kinds.kind_names()
DOMAIN_ATTRIBUTES: tuple[str, ...] = tuple(n for n in Spec.model_fields if n != "name" and n not in KINDS)
UNLABELLED: tuple[str, ...] = _kinds.unlabelled()
MODEL_KINDS: tuple[str, ...] = tuple(_kinds.kinds_with_role("model"))
SYSTEM_KINDS: tuple[str, ...] = tuple(_kinds.kinds_with_role("system")) + ("endpoint",)
BLOCK_TYPES: dict[str, type] = {k.name: k.block for k in _kinds.all_kinds()}


def json_schema() -> dict[str, Any]:
    return Spec.model_json_schema(by_alias=True)
