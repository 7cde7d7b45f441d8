"""A recipe together with its workdir and state: what the commands that read applied results use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from sdk.backends.base import Artifact
from sdk.errors import DslError
from sdk.state import State, StateStore


@dataclass
class Workspace:
    recipe: Any  # dsl.parser.Recipe
    workdir: Path
    state: State

    @property
    def spec(self) -> Any:
        return self.recipe.spec

    def artifact(self, step_id: str) -> Artifact:
        from sdk.executor import load_artifact

        entry = self.state.steps.get(step_id)
        if entry is None or entry.get("status") not in ("done", "gate_failed"):
            raise DslError(f"step {step_id} has not been applied: run dsl apply {self.recipe.path}")
        art = load_artifact(step_id, entry)
        if art is None:
            raise DslError(f"the artifact of {step_id} is missing from {self.workdir}: run dsl apply again")
        return art

    def artifacts(self) -> dict[str, Artifact]:
        from sdk.executor import finished_artifacts

        return finished_artifacts(self.state)


def open_workspace(recipe_path: Union[str, Path], workdir: Optional[Union[str, Path]] = None) -> Workspace:
    from dsl.parser import load_recipe

    recipe = load_recipe(recipe_path)
    wd = Path(workdir) if workdir else recipe.spec.base_dir / ".dsl"
    return Workspace(recipe, wd, StateStore(wd).load())
