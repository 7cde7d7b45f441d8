"""Opening an applied system through its kind's declaration: ``serving`` says how it is served and asked,
``opener`` (``"module:function"``) opens it from its artifact. Openers are imported by name when first used, as
backends are, so a system kind's heavy libraries load only when one of its systems is opened."""

from __future__ import annotations

import importlib
from typing import Any, Optional

from sdk.artifacts import Artifact
from sdk.errors import DslError
from sdk.spec import kinds as K

MODEL_OPENER = "sdk.backends.eval.clients:open_model"  # the built-in model kinds' (named by string: no backend import)


def _kind(ref: Any) -> Optional[K.Kind]:
    """The kind of a Ref (``rag.docs``), a step id or a kind name; None for an endpoint or an unknown kind."""
    name = getattr(ref, "kind", None) if not isinstance(ref, str) else ref.partition(".")[0]
    try:
        return K.get_kind(name) if isinstance(name, str) else None
    except KeyError:
        return None


def serving_of(ref: Any) -> Optional[str]:
    """How a system is served and asked: ``model``, ``rag``, ``router``, ``system`` (see
    :attr:`sdk.spec.kinds.Kind.serving_as`), or None when ``ref`` names no runtime system."""
    kind = _kind(ref)
    return kind.serving_as if kind is not None else None


def open_system(art: Artifact, **options: Any) -> Any:
    """The system of an applied step, opened by its kind's opener from the artifact alone. ``options`` are passed
    on (``spec``: the recipe being run, so an endpoint's key goes only where it names; ``base_dir``: where
    relative paths resolve; ``with_generator``)."""
    kind = _kind(art.step_id)
    # a model kind that names no opener (a plugin's) is opened as the built-in model kinds are
    name = (kind.opener or (MODEL_OPENER if kind.serving_as == "model" else None)) if kind is not None else None
    if kind is None or not name:
        raise DslError(f"{art.step_id} is not a system that can be opened (its kind declares no opener)")
    module_name, _, attr = name.partition(":")
    try:
        opener = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        hint = f" (install with: {kind.install_hint})" if kind.install_hint else ""
        raise DslError(f"the opener of {kind.name} systems, {name}, cannot be loaded: {e}{hint}") from None
    try:
        return opener(art, **options)
    except DslError:
        raise
    except Exception as e:  # noqa: BLE001 - a system that does not open: say which, no traceback
        raise DslError(f"{art.step_id} could not be opened from {art.path}: {type(e).__name__}: {e}") from None


class Asker:
    """An opened system asked as the eval asks an endpoint: ``ask(question, max_new_tokens) -> text``."""

    def __init__(self, system: Any) -> None:
        self.system = system

    def ask(self, question: str, max_new_tokens: int) -> str:
        out = self.system.answer(question, max_new_tokens=max_new_tokens)
        return str(out.get("answer") or "") if isinstance(out, dict) else str(out)
