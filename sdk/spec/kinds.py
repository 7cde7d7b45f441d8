"""Block kinds, each declared once beside its block class.

A declaration says everything the rest of the SDK needs to know about a kind: its name, whether it takes a label,
its role (a ``model`` that rag generators, evals and routes may name; another ``system``; a plain ``step``; or a
``setting`` that is no step at all, like ``compute``), how its systems are served and opened, whether it
evaluates systems and carries gates (``evaluates=True``: promotion reads its verdicts), its implicit dependencies
and the outputs of those it reads, the files it reads (their hashes enter its fingerprint), its cross-block checks,
its default backend and the outputs it provides to later steps. A kind that is a step must name its backend: one
declared without is refused here, never run by the test backend, which runs a step only where a test (or
``--backend test``) asks.
The spec's fields, the planner's steps and edges, the backend registry's defaults, the builder's methods,
``dsl schema`` and the language reference are derived from these declarations::

    @declare("finetune", role="model", backend=("trl", "sdk.backends.training.finetune:FinetuneBackend"),
             outputs=("adapter",))
    class FinetuneBlock(TrainCommon): ...

Third-party kinds register through the ``dsl.kinds`` entry point group (a ``module:attribute`` naming a
:class:`Kind`, a block class declared with :func:`declare`, or a list of them). They are read once, when
``sdk.spec`` is first imported; a broken plugin is reported (``plugin_errors()``), never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROLES = ("model", "system", "step", "setting")
SERVING = ("model", "rag", "router", "system")  # how an applied runtime system is served and evaluated
ENTRY_POINT_GROUP = "dsl.kinds"

# (step id, facets of its outputs that the dependent reads, or None for all of them)
Dep = tuple[str, Optional[tuple[str, ...]]]


@dataclass(frozen=True)
class Kind:
    name: str
    block: type
    labelled: bool = True
    role: str = "step"
    backend: Optional[str] = None  # default backend name
    backend_target: Optional[str] = None  # "module:Class" of that backend
    install_hint: str = ""
    outputs: tuple[str, ...] = ()  # keys a backend must return in StepResult.outputs
    implicit: Optional[Callable[[Any, str, Any], list[Dep]]] = None  # (spec, label, block) -> more dependencies
    consumes: Optional[Callable[[Any, str, Any, str], Optional[tuple[str, ...]]]] = None  # facets read of a ref dep
    reads: Optional[Callable[[Any, Any], list[Path]]] = None  # (spec, block) -> files read (fingerprinted)
    check: Optional[Callable[..., list[Any]]] = None  # (spec, label, block, check_files) -> [Problem], validation
    plan_check: Optional[Callable[[Any, str, Any], list[Any]]] = None  # (spec, label, block) -> [Problem], plan time
    facets: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None  # manifest -> what dependents may read
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # a runtime system (see sdk.systems): how the gateway serves it and the eval asks it (one of SERVING), and the
    # "module:function" that opens it from its applied artifact: (artifact, **options) -> an object whose
    # answer(question, max_new_tokens=N) returns {"answer", "sources", "cited"}
    serving: Optional[str] = None
    opener: Optional[str] = None
    # a step that evaluates systems and carries gates (the built-in ``eval``): its recorded ``config.gate`` decides
    # the promotion of the systems it names, and its ``metrics`` are what a route's threshold and curve read
    evaluates: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"kind {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"kind name {self.name!r} must be a lower-case identifier")
        if self.is_step and not self.backend:
            raise ValueError(f"kind {self.name!r} is a step but names no backend to run it: declare it with "
                             f"backend=(NAME, \"module:Class\") (the test backend runs a step only when a test or "
                             "--backend test asks for it)")
        if self.role == "setting" and self.backend:
            raise ValueError(f"kind {self.name!r} is a setting, not a step: it has no backend")
        if self.evaluates and not self.is_step:
            raise ValueError(f"kind {self.name!r} is a setting: it cannot evaluate systems (evaluates=True)")
        if self.serving is not None and self.serving not in SERVING:
            raise ValueError(f"kind {self.name!r}: serving must be one of {', '.join(SERVING)}, not {self.serving!r}")
        if self.serving_as == "system" and not self.opener:
            raise ValueError(f"kind {self.name!r} is served as a system but names no opener: declare it with "
                             "opener=\"module:function\" ((artifact, **options) -> an object with answer())")

    @property
    def is_step(self) -> bool:
        return self.role != "setting"

    @property
    def is_model(self) -> bool:
        return self.role == "model"

    @property
    def is_system(self) -> bool:
        return self.role in ("model", "system")

    @property
    def serving_as(self) -> Optional[str]:
        """How the gateway serves an applied step of this kind and the eval asks it: ``model`` (its weights in the
        local engine), ``rag`` (retrieval in the gateway, its generator a model variant or an endpoint), ``router``
        (``model="auto"``), ``system`` (opened by its opener and asked), or None (no runtime system)."""
        if self.serving is not None:
            return self.serving
        if self.role == "model":
            return "model"
        return "system" if self.role == "system" and self.opener else None


_KINDS: dict[str, Kind] = {}
_PLUGIN_ERRORS: list[str] = []
_plugins_read = False


def register_kind(kind: Kind) -> Kind:
    """Add a kind; a second kind of the same name is refused (as PEFT refuses a second method of one name)."""
    old = _KINDS.get(kind.name)
    if old is not None and old.block is not kind.block:
        raise ValueError(f"block kind {kind.name!r} is already registered (by {old.block.__module__})")
    _KINDS[kind.name] = kind
    return kind


def declare(name: str, *, role: str = "step", labelled: bool = True,
            backend: Optional[Sequence[str]] = None, **options: Any) -> Callable[[type], type]:
    """Class decorator: declare a block class as kind ``name``. ``backend`` is ``(name, "module:Class"[, hint])``."""

    def wrap(cls: type) -> type:
        be = tuple(backend or ())
        kind = Kind(name=name, block=cls, labelled=labelled, role=role,
                    backend=be[0] if be else None, backend_target=be[1] if len(be) > 1 else None,
                    install_hint=be[2] if len(be) > 2 else "", doc=(cls.__doc__ or "").strip(), **options)
        cls.__dsl_kind__ = kind  # type: ignore[attr-defined]
        register_kind(kind)
        return cls

    return wrap


def load_plugins() -> None:
    """Read the ``dsl.kinds`` entry points once. Errors are kept for ``dsl status``/``doctor``, never raised."""
    global _plugins_read
    if _plugins_read:
        return
    _plugins_read = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            for item in obj if isinstance(obj, (list, tuple)) else [obj]:
                kind = getattr(item, "__dsl_kind__", item)
                if not isinstance(kind, Kind):
                    raise TypeError(f"{ep.value} is not a Kind or a declared block class")
                register_kind(kind)
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
            _PLUGIN_ERRORS.append(f"block kind plugin {ep.name!r} ({ep.value}) could not be loaded: "
                                  f"{type(e).__name__}: {e}")


def plugin_errors() -> list[str]:
    return list(_PLUGIN_ERRORS)


def all_kinds() -> list[Kind]:
    return list(_KINDS.values())


def get_kind(name: str) -> Kind:
    return _KINDS[name]


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def kinds_with_role(role: str) -> list[str]:
    """Kinds a reference of this role may name: ``system`` takes models too."""
    if role == "system":
        return [k.name for k in _KINDS.values() if k.is_system]
    return [k.name for k in _KINDS.values() if k.role == role]


def kinds_served_as(serving: str) -> list[str]:
    """Kinds whose systems are served and asked as ``serving`` (``model``, ``rag``, ``router``, ``system``)."""
    return [k.name for k in _KINDS.values() if k.serving_as == serving]


def kinds_that_evaluate() -> list[str]:
    """Kinds whose steps evaluate systems and carry gates (declared ``evaluates=True``: the built-in ``eval``, or a
    plugin's): their verdicts promote or withhold the systems their gates name."""
    return [k.name for k in _KINDS.values() if k.evaluates]


def evaluates(step_id: str) -> bool:
    """Whether a step id (``eval.expert``) or a kind name is of a kind declared to evaluate systems; asked instead
    of comparing names (``startswith("eval.")``), so a plugin's evaluating kind counts too."""
    kind = _KINDS.get(step_id.partition(".")[0]) if isinstance(step_id, str) else None
    return kind is not None and kind.evaluates


def step_kinds() -> list[str]:
    return [k.name for k in _KINDS.values() if k.is_step]


def unlabelled() -> tuple[str, ...]:
    return tuple(k.name for k in _KINDS.values() if not k.labelled)


def default_backends() -> dict[str, str]:
    return {k.name: k.backend for k in _KINDS.values() if k.backend}


def backend_targets() -> dict[str, tuple[str, str]]:
    """Backend name -> ("module:Class", install hint), from the kinds' declarations."""
    out: dict[str, tuple[str, str]] = {}
    for k in _KINDS.values():
        if k.backend and k.backend_target:
            out.setdefault(k.backend, (k.backend_target, k.install_hint))
    return out


VOLATILE_SUFFIXES = (".png", ".log", ".md", ".html")
VOLATILE_NAMES = ("loss.json", "manifest.json")


def content_facets(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a dependent reads of a finished step by default: the content of the files it wrote (charts, logs and
    model cards aside) and its outputs. Two runs that wrote the same content give the same facet (early cutoff)."""
    from sdk.hashing import digest

    files = {name: meta.get("sha256") for name, meta in sorted((manifest.get("written") or {}).items())
             if not name.endswith(VOLATILE_SUFFIXES) and Path(name).name not in VOLATILE_NAMES}
    return {"content": digest({"files": files, "outputs": manifest.get("outputs") or {}})}


def source_facets(manifest: dict[str, Any]) -> dict[str, Any]:
    """:func:`content_facets`, plus the hashes of the files the step read, for a step whose outputs point at those
    files rather than copy them (a base model's local folder: its weights, tokenizer and chat template). A step
    that read no file has the facets :func:`content_facets` gives."""
    from sdk.hashing import digest

    facets = content_facets(manifest)
    files = manifest.get("files") or {}
    return {"content": digest({"content": facets["content"], "read": files})} if files else facets


def config_of(spec: Any, kind: str, block: Any) -> dict[str, Any]:
    """What enters the fingerprint and the state for a block: its attributes (plus what its kind adds, e.g. the
    compute block a training step launches with), without the backend's name (which is recorded apart)."""
    make = get_kind(kind).extra.get("config")
    config = make(spec, block) if make else block.model_dump(mode="json", by_alias=True)
    config.pop("backend", None)
    return config
