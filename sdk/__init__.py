"""domain-dsl SDK: the spec, the builder, the planner and the apply engine.

    import sdk
    spec = sdk.load("recipes/quickstart.dsl")      # or sdk.Domain(...)...build()
    print(sdk.plan(spec).render())
    sdk.apply(spec)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from sdk.builder import Domain, endpoint, env, file, llama, memory, pgvector, ref
from sdk.errors import DataError, Diagnostic, DslError, SpecError
from sdk.spec import Spec

__all__ = ["Domain", "Spec", "load", "plan", "apply", "env", "file", "llama", "endpoint", "pgvector", "memory",
           "ref", "DslError", "SpecError", "DataError", "Diagnostic"]
__version__ = "0.1.0"


def load(path: Union[str, Path]) -> Spec:
    """Parse and validate a recipe file (following ``extends``), through the loader registered for its suffix
    (the DSL registers ``.dsl``; the SDK does not import it)."""
    from sdk.loaders import load as _load

    return _load(path)


def plan(spec: Spec, workdir: Optional[Union[str, Path]] = None, **kwargs: Any) -> Any:
    """The plan for ``spec`` against the state in ``workdir`` (default: ``.dsl`` beside the recipe)."""
    from sdk.planner import plan as _plan
    from sdk.state import StateStore

    wd = Path(workdir) if workdir else spec.base_dir / ".dsl"
    return _plan(spec, StateStore(wd).load(), **kwargs)


def apply(spec: Spec, workdir: Optional[Union[str, Path]] = None, **kwargs: Any) -> Any:
    """Plan and run every step that is not up to date; returns an ApplyResult."""
    from sdk.executor import apply as _apply

    return _apply(spec, workdir=Path(workdir) if workdir else None, **kwargs)
