"""domain-dsl SDK: the spec, the builder, the planner and the apply engine.

    import sdk
    spec = sdk.load("recipes/quickstart.dsl")      # or sdk.Domain(...)...build()
    print(sdk.plan(spec).render())
    sdk.apply(spec)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from sdk.builder import Domain, endpoint, env, file, index, llama, memory, pgvector, ref
from sdk.errors import DataError, Diagnostic, DslError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    from sdk.backends.base import Registry
    from sdk.executor import ApplyResult
    from sdk.plans import Plan, Step
    from sdk.progress import Progress
    from sdk.spec import Spec

__all__ = ["Domain", "Spec", "load", "plan", "apply", "env", "file", "llama", "endpoint", "pgvector", "memory", "index",
           "ref", "DslError", "SpecError", "DataError", "Diagnostic"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Spec":  # built from the kinds registered so far (sdk.spec builds it again after a new one)
        import sdk.spec

        return sdk.spec.Spec
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


def load(path: Union[str, Path]) -> Spec:
    """Parse and validate a recipe file (following ``extends``), through the loader registered for its suffix
    (the DSL registers ``.dsl``; the SDK does not import it)."""
    from sdk.loaders import load as _load

    return _load(path)


def plan(spec: Spec, workdir: Optional[Union[str, Path]] = None, *, backend: Optional[str] = None,
         replace: Iterable[str] = (), target: Optional[Iterable[str]] = None, check: bool = True,
         skip_checks: bool = False, on_warning: Optional[Callable[[list[Any]], None]] = None,
         registry: Optional["Registry"] = None) -> "Plan":
    """The plan for ``spec`` against the state in ``workdir`` (default: ``.dsl/<domain>/`` beside the recipe). ``backend``
    runs every step with one backend (e.g. "test"); ``replace`` forces steps to re-run; ``target`` limits the plan
    to those steps and their dependencies; ``check`` runs the backends' plan-time and environment checks;
    ``skip_checks`` turns failing environment checks into warnings passed to ``on_warning``; ``registry``: a
    backend registry with your own backends registered."""
    from sdk.planner import plan as _plan
    from sdk.state import StateStore

    from sdk.workdirs import workdir_for

    wd = workdir_for(spec, workdir)
    return _plan(spec, StateStore(wd).load(), registry, backend=backend, replace=replace, target=target, check=check,
                 skip_checks=skip_checks, on_warning=on_warning)


def apply(spec: Spec, workdir: Optional[Union[str, Path]] = None, *, backend: Optional[str] = None,
          replace: Iterable[str] = (), target: Optional[Iterable[str]] = None,
          options: Optional[dict[str, Any]] = None, progress: Optional["Progress"] = None,
          log: Optional[Callable[[str], None]] = None, on_step: Optional[Callable[["Step", str], None]] = None,
          saved_plan: Optional["Plan"] = None, skip_checks: bool = False,
          on_warning: Optional[Callable[[list[Any]], None]] = None,
          registry: Optional["Registry"] = None) -> "ApplyResult":
    """Plan and run every step that is not up to date; returns an ApplyResult. ``options`` reach every backend
    (e.g. ``{"quick": True}``); ``log`` receives the backends' log lines; ``on_step(step, event)`` each step's
    events; ``saved_plan`` is refused when stale; the other options are those of :func:`plan`."""
    from sdk.executor import apply as _apply

    return _apply(spec, workdir=Path(workdir) if workdir else None, backend=backend, replace=replace, target=target,
                  options=options, progress=progress, log=log, on_step=on_step, saved_plan=saved_plan,
                  skip_checks=skip_checks, on_warning=on_warning, registry=registry)
