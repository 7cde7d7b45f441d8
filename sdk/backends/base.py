"""The backend contract and the registry (fsspec-style: name -> "module:Class", imported on first use).

A backend runs one kind of step. Its module must import nothing heavy at module level: torch, transformers,
haystack, trl and friends are imported inside :meth:`Backend.run` (or helpers it calls), so that ``dsl validate``
and ``dsl plan`` stay instant.

Contract::

    class MyBackend(Backend):
        name = "mine"             # registry name
        version = "1"             # bump when the output for the same inputs changes: it enters fingerprints
        kinds = ("finetune",)     # block kinds it can run
        requires = ("trl", "peft")  # importable modules it needs; a missing one is named with install_hint
        install_hint = "pip install 'domain-dsl[train]'"

        def check(self, ctx: CheckContext) -> list[Problem]: ...   # optional, pure, at plan time
        def environment(self, ctx: CheckContext) -> list[Problem]: ...  # optional: what the machine must offer
        def run(self, ctx: StepContext) -> StepResult: ...

``run`` writes everything into ``ctx.out_dir`` (a temporary folder renamed into place only on success), reads
its inputs' artifacts through ``ctx.inputs`` and returns metrics and a short summary for the manifest.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from sdk import envchecks as E
from sdk.artifacts import Artifact  # noqa: F401 - re-exported: backends receive their inputs as Artifacts
from sdk.errors import DslError
from sdk.spec import kinds, suggest

if TYPE_CHECKING:  # pragma: no cover
    from sdk.spec import Block, Problem, Spec


@dataclass
class CheckContext:
    """What a backend may look at when checking a block at plan time (no heavy imports, no training)."""

    spec: "Spec"
    kind: str
    label: str
    block: "Block"
    checked: list[dict[str, Any]] = field(default_factory=list)  # environment checks done: {"check", "ok"}

    @property
    def path(self) -> tuple[str, str]:
        return (self.kind, self.label)


@dataclass
class StepResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # relative file names and small facts for later steps
    summary: str = ""


class GateFailed(DslError):
    """Raised by an eval backend when its gate does not hold; the step's artifact is still kept."""

    def __init__(self, message: str, result: StepResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class StepContext:
    spec: "Spec"
    step_id: str
    kind: str
    label: str
    block: "Block"
    fingerprint: str
    out_dir: Path
    workdir: Path
    checkpoint_dir: Path  # survives a failed or killed run of the same fingerprint: resume from here
    inputs: dict[str, Artifact]  # step id -> artifact of each dependency its kind declares, and nothing else
    progress: Any  # sdk.progress.Progress: .task(description, total) -> handle with .advance(n), .update(**fields)
    log: Callable[[str], None]
    options: dict[str, Any] = field(default_factory=dict)  # apply-wide options (e.g. {"quick": True})
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of each file the plan hashed (lineage)

    @property
    def base_dir(self) -> Path:
        return self.spec.base_dir

    def input(self, ref: Any) -> Artifact:
        return self.inputs[str(ref)]


class Backend:
    name: str = ""
    version: str = "1"
    kinds: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    reads_secrets: bool = True  # its steps read the env() variables of their blocks when they run

    def check(self, ctx: CheckContext) -> list["Problem"]:
        return []

    def environment(self, ctx: CheckContext) -> list["Problem"]:
        """Plan-time checks of the machine, for steps that will run (sdk.envchecks): by default, the required
        packages are importable and the env() variables the step reads are set. Backends add their own (CUDA,
        cached hub models, a reachable server) by extending this list. Problems may be warnings
        (``severity = "warning"``)."""
        problems = E.packages(ctx, self, ctx.path)
        if self.reads_secrets:
            problems += E.env_vars(ctx, E.secrets_read(ctx.spec, ctx.kind, ctx.label, ctx.block))
        return problems

    def extra_inputs(self, spec: "Spec", kind: str, label: str, block: "Block") -> list[Path]:
        """Files this step reads beyond what the spec names (their content hashes enter the fingerprint)."""
        return []

    def run(self, ctx: StepContext) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def missing_requirements(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


class MissingDependency(DslError):
    pass


ENTRY_POINT_GROUP = "dsl.backends"
TEST_BACKEND = ("sdk.backends.testing:TestBackend", "")


def builtin_backends() -> dict[str, tuple[str, str]]:
    """name -> ("module:Class", install hint): the test backend, and each kind's declared default backend."""
    import sdk.spec  # noqa: F401 - declares the built-in kinds and reads the kind plugins

    return {"test": TEST_BACKEND, **kinds.backend_targets()}


class Registry:
    """Backend names -> classes, loaded lazily. Third parties register through the ``dsl.backends`` entry point
    group; a broken plugin is reported when it is used, never when the CLI starts."""

    def __init__(self, extra: Optional[dict[str, str]] = None) -> None:
        self._builtin = builtin_backends()
        self._targets: dict[str, tuple[str, str]] = dict(self._builtin)
        self._loaded: dict[str, Backend] = {}
        self._entry_points_read = False
        for name, target in (extra or {}).items():
            self.register(name, target)

    def register(self, name: str, target: "str | type[Backend]", install_hint: str = "") -> None:
        if name in self._targets and name not in self._builtin:
            raise ValueError(f"backend {name!r} is already registered")
        if isinstance(target, str):
            self._targets[name] = (target, install_hint)
        else:
            self._targets[name] = (f"{target.__module__}:{target.__qualname__}", install_hint)
            self._loaded[name] = target()

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._targets.setdefault(ep.name, (ep.value, f"the plugin providing backend {ep.name!r}"))

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._targets)

    def get(self, name: str) -> Backend:
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._targets:
            self._read_entry_points()
        if name not in self._targets:
            hint = suggest(name, self._targets)
            raise DslError(f"unknown backend {name!r}" + (f"; {hint}" if hint else f"; known: {', '.join(self.names())}"))
        target, hint = self._targets[name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
        except ImportError as e:
            raise MissingDependency(
                f"backend {name!r} cannot be loaded: {e}" + (f" (install with: {hint})" if hint else "")
            ) from e
        except AttributeError as e:
            raise DslError(f"backend {name!r} points at {target}, which does not exist") from e
        backend = cls()
        if not backend.install_hint and hint:
            backend.install_hint = hint
        self._loaded[name] = backend
        return backend

    def version_of(self, name: str) -> str:
        """Name and version without importing heavy modules (backend modules import nothing heavy)."""
        return self.get(name).version


def backend_name(kind: str, block: Any, override: Optional[str] = None) -> str:
    """The backend that runs a step: ``override`` (``--backend``), else the block's own ``backend``, else its kind's
    declared one (every step kind declares one; the test backend is never a fallback)."""
    name = override or getattr(block, "backend", None) or kinds.get_kind(kind).backend
    if not name:
        raise DslError(f"no backend runs {kind} steps: its kind declares none")
    return name


def require(backend: Backend) -> None:
    missing = backend.missing_requirements()
    if missing:
        raise MissingDependency(
            f"backend {backend.name!r} needs {', '.join(missing)}, which is not installed"
            + (f"; install with: {backend.install_hint}" if backend.install_hint else "")
        )
