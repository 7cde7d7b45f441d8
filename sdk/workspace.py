"""A spec together with its workdir and state: what the commands that read applied results use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from sdk.backends.base import Artifact
from sdk.errors import DslError
from sdk.records.state import Status
from sdk.spec.kinds import kinds_served_as
from sdk.state import State, StateStore


@dataclass
class Workspace:
    spec: Any
    workdir: Path
    state: State
    recipe: Any = None  # what the spec was loaded from (the DSL's Recipe, with spans), when known

    @property
    def source(self) -> str:
        """The command that applies this workspace's recipe, as it can be run (its workdir named when not the
        default one)."""
        import shlex

        from sdk.workdirs import default_workdir

        path = getattr(self.recipe, "path", None)
        where = shlex.quote(str(path)) if path else "RECIPE"
        if Path(self.workdir) != default_workdir(self.spec):
            where += f" --workdir {shlex.quote(str(self.workdir))}"
        return f"dsl apply {where}"

    def artifact(self, step_id: str) -> Artifact:
        from sdk.executor import load_artifact
        from sdk.integrity import damaged

        entry = self.state.steps.get(step_id)
        if entry is None or entry.get("status") not in Status.finished():
            raise DslError(f"step {step_id} has not been applied: run {self.source}")
        problem = damaged(self.state, step_id, entry)
        if problem:
            raise DslError(f"the artifact of {step_id} in {self.workdir} is damaged ({problem}): run dsl apply")
        art = load_artifact(self.state, step_id)
        if art is None:
            raise DslError(f"the artifact of {step_id} is missing from {self.workdir}: run dsl apply again")
        return art

    def artifacts(self) -> dict[str, Artifact]:
        from sdk.executor import finished_artifacts

        return finished_artifacts(self.state)

    def drift(self, step_id: str) -> Optional[str]:
        """One line when the recipe changed since ``step_id`` was applied (what is used is the applied version)."""
        from sdk.systems import drift

        return drift(self.spec, self.state, step_id)

    def open(self, step_id: str, **options: Any) -> Any:
        """The applied system ``step_id`` (a rag system, a router, a model, a plugin's system), opened by its kind's
        declared opener from its artifact alone."""
        from sdk.systems import open_system

        return open_system(self.artifact(step_id), **{"base_dir": self.spec.base_dir, "spec": self.spec, **options})

    def rag(self, label: str, with_generator: bool = True) -> Any:
        """The applied rag system ``LABEL`` (``rag.LABEL``, or a step of another kind declared to be served as a rag
        system), opened from its artifact. The kinds are found by declaration (``serving="rag"``), not by name."""
        kinds = kinds_served_as("rag")
        found = [f"{k}.{label}" for k in kinds if label in (getattr(self.spec, k, None) or {})]
        found = found or [f"{k}.{label}" for k in kinds if f"{k}.{label}" in self.state.steps]  # no recipe: state
        if len(found) > 1:
            raise DslError(f"{label!r} names several rag systems ({', '.join(found)}): open one with open(STEP_ID)")
        if not found and not kinds:
            raise DslError("no kind is declared to be served as a rag system")
        return self.open(found[0] if found else f"{kinds[0]}.{label}", with_generator=with_generator)

    def promotion(self) -> dict[str, dict[str, Any]]:
        from sdk.promotion import promotion

        return promotion(self.state.steps)


def open_workspace(recipe: Union[str, Path, Any], workdir: Optional[Union[str, Path]] = None,
                   loaded: Any = None) -> Workspace:
    """A workspace for a recipe file (loaded through the registered loader, see :func:`sdk.load`) or a Spec."""
    if isinstance(recipe, (str, Path)):
        from sdk.loaders import load

        spec = load(recipe)
        loaded = loaded or _Source(Path(recipe))
    else:
        spec = recipe
    from sdk.workdirs import workdir_for

    wd = workdir_for(spec, workdir)
    return Workspace(spec, wd, StateStore(wd).load(), loaded)


@dataclass
class _Source:
    path: Path
