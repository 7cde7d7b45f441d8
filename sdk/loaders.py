"""Recipe loaders: the SDK reads a recipe file through the loader registered for its suffix (entry point group
``sdk.loaders``, name = suffix without the dot). The DSL registers itself for ``.dsl``; the SDK never imports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from sdk.errors import DslError

GROUP = "sdk.loaders"


def load(path: Union[str, Path]) -> Any:
    """Parse and validate a recipe file into a Spec."""
    from importlib.metadata import entry_points

    suffix = Path(path).suffix.lstrip(".")
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if suffix not in found:
        raise DslError(f"no recipe loader for {Path(path).name!r} (loaders: {', '.join(sorted(found)) or 'none'}; "
                       "install domain-dsl with its DSL)")
    return found[suffix].load()(path)
