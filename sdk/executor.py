"""Walk the plan's DAG, run each pending step through its backend, save state after every step.

Artifacts are written into a temporary folder and renamed into ``artifacts/<step>/<fingerprint>/`` only when the
step succeeds; a failed step leaves earlier artifacts and state intact, and the next apply resumes from there.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sdk import spec as S
from sdk.backends.base import Artifact, GateFailed, Registry, StepContext, StepResult, require
from sdk.errors import DslError
from sdk.hashing import HashCache
from sdk.planner import plan as make_plan
from sdk.plans import Action, Plan, Step
from sdk.progress import Progress
from sdk.state import State, StateStore, WorkdirLock, write_atomic


@dataclass
class StepOutcome:
    id: str
    status: str  # ran | up_to_date | skipped | failed | gate_failed | deleted
    seconds: float = 0.0
    summary: str = ""
    error: str = ""


@dataclass
class ApplyResult:
    plan: Plan
    outcomes: list[StepOutcome] = field(default_factory=list)
    workdir: Path = Path(".")

    @property
    def ran(self) -> list[str]:
        return [o.id for o in self.outcomes if o.status in ("ran", "gate_failed")]

    @property
    def gate_failures(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "gate_failed"]

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.gate_failures


def default_workdir(spec: S.Spec) -> Path:
    return spec.base_dir / ".dsl"


def load_artifact(step_id: str, entry: dict[str, Any]) -> Optional[Artifact]:
    path = Path(entry.get("artifact", ""))
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return None
    return Artifact(step_id, path, json.loads(manifest_path.read_text(encoding="utf-8")))


def finished_artifacts(state: State) -> dict[str, Artifact]:
    out: dict[str, Artifact] = {}
    for step_id, entry in state.steps.items():
        if entry.get("status") in ("done", "gate_failed"):
            art = load_artifact(step_id, entry)
            if art is not None:
                out[step_id] = art
    return out


def _lineage(state: State, step: Step) -> dict[str, Any]:
    files = dict(step.files)
    steps: list[str] = []
    for dep in step.depends_on:
        entry = state.steps.get(dep, {})
        steps += [dep] + [s for s in entry.get("lineage", {}).get("steps", []) if s not in steps]
        files.update(entry.get("lineage", {}).get("files", {}))
    return {"steps": list(dict.fromkeys(steps)), "files": dict(sorted(files.items()))}


def apply(
    spec: S.Spec,
    *,
    workdir: Optional[Path] = None,
    registry: Optional[Registry] = None,
    backend: Optional[str] = None,
    replace: Iterable[str] = (),
    target: Optional[Iterable[str]] = None,
    options: Optional[dict[str, Any]] = None,
    progress: Optional[Progress] = None,
    log: Optional[Callable[[str], None]] = None,
    on_step: Optional[Callable[[Step, str], None]] = None,
    saved_plan: Optional[Plan] = None,
) -> ApplyResult:
    """Plan and apply. ``on_step(step, event)`` is called with event "start" | "ran" | "up_to_date" |
    "skipped" | "failed" | "gate_failed" | "deleted" (the CLI prints from it)."""
    workdir = Path(workdir) if workdir else default_workdir(spec)
    registry = registry or Registry()
    log = log or (lambda msg: None)
    notify = on_step or (lambda step, event: None)
    store = StateStore(workdir)
    progress = progress or Progress(enabled=False)
    with WorkdirLock(workdir):
        state = store.load()
        cache = HashCache(state.hashes)
        the_plan = make_plan(spec, state, registry, backend=backend, replace=replace, target=target, hash_cache=cache)
        if saved_plan is not None:
            _check_not_stale(saved_plan, the_plan, state)
        state.domain = spec.name
        state.hashes = cache.entries
        result = ApplyResult(the_plan, workdir=workdir)
        blocked: dict[str, str] = {}
        with progress:
            for step in the_plan.steps:
                if step.action is Action.DELETE:
                    entry = state.steps.pop(step.id, {})
                    if entry.get("artifact"):
                        shutil.rmtree(Path(entry["artifact"]).parent, ignore_errors=True)
                    store.save(state)
                    result.outcomes.append(StepOutcome(step.id, "deleted"))
                    notify(step, "deleted")
                    continue
                why = next((blocked[d] for d in step.depends_on if d in blocked), None)
                if why:
                    blocked[step.id] = why
                    result.outcomes.append(StepOutcome(step.id, "skipped", error=why))
                    notify(step, "skipped")
                    continue
                if step.action is Action.NOOP:
                    entry = state.steps[step.id]
                    status = "gate_failed" if entry.get("status") == "gate_failed" else "up_to_date"
                    if status == "gate_failed":
                        blocked[step.id] = f"gate of {step.id} failed"
                    result.outcomes.append(StepOutcome(step.id, status, summary=entry.get("summary", ""),
                                                       error=entry.get("error", "")))
                    notify(step, status)
                    continue
                notify(step, "start")
                outcome = _run_step(spec, step, state, store, registry, workdir, options or {}, progress, log)
                result.outcomes.append(outcome)
                notify(step, outcome.status)
                if outcome.status == "gate_failed":
                    blocked[step.id] = f"gate of {step.id} failed"
                if outcome.status == "failed":
                    break
        return result


def _check_not_stale(saved: Plan, fresh: Plan, state: State) -> None:
    if saved.lineage and saved.lineage != state.lineage:
        raise DslError("the saved plan was made for another workdir (lineage differs); run dsl plan again")
    if saved.serial != fresh.serial:
        raise DslError(f"the saved plan is stale: state changed since it was made (serial {saved.serial} -> "
                       f"{fresh.serial}); run dsl plan again")
    old = {s.id: (s.action, s.fingerprint) for s in saved.steps}
    new = {s.id: (s.action, s.fingerprint) for s in fresh.steps}
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise DslError(f"the saved plan is stale: {', '.join(changed)} would now plan differently; run dsl plan again")


def _run_step(spec: S.Spec, step: Step, state: State, store: StateStore, registry: Registry, workdir: Path,
              options: dict[str, Any], progress: Progress, log: Callable[[str], None]) -> StepOutcome:
    backend = registry.get(step.backend)
    block = getattr(spec, step.kind)[step.label]
    final = workdir / "artifacts" / step.id / step.fingerprint
    tmp = workdir / "artifacts" / step.id / f".tmp-{step.fingerprint[:16]}"
    checkpoints = workdir / "checkpoints" / step.id / step.fingerprint[:16]
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
    artifacts = finished_artifacts(state)
    inputs = {d: artifacts[d] for d in step.depends_on if d in artifacts}
    ctx = StepContext(spec=spec, step_id=step.id, kind=step.kind, label=step.label, block=block,
                      fingerprint=step.fingerprint, out_dir=tmp, workdir=workdir, checkpoint_dir=checkpoints,
                      inputs=inputs, progress=progress, log=log, options={**options, "artifacts": artifacts})
    started = time.time()
    status, error = "done", ""
    try:
        missing = [d for d in step.depends_on if d not in inputs]
        if missing:
            raise DslError(f"inputs {', '.join(missing)} have no finished artifact")
        require(backend)
        result = backend.run(ctx)
        if not isinstance(result, StepResult):
            raise DslError(f"backend {backend.name!r} returned {type(result).__name__}, not a StepResult")
    except GateFailed as e:
        result, status, error = e.result, "gate_failed", str(e)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised for interrupts
        shutil.rmtree(tmp, ignore_errors=True)
        message = str(e) if isinstance(e, DslError) else f"{type(e).__name__}: {e}"
        entry = dict(state.steps.get(step.id, {}))
        entry.update(status="failed", error=message, failed_fingerprint=step.fingerprint,
                     backend=step.backend, backend_version=step.backend_version)
        if "traceback" not in message and not isinstance(e, DslError):
            entry["traceback"] = traceback.format_exc()[-4000:]
        state.steps[step.id] = entry
        store.save(state)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if options.get("raise_errors"):
            raise
        return StepOutcome(step.id, "failed", time.time() - started, error=f"{step.id} failed: {message}")
    finished = time.time()
    entry = {
        "status": status, "fingerprint": step.fingerprint, "backend": step.backend,
        "backend_version": step.backend_version, "config": step.config, "files": step.files,
        "inputs": {d: state.steps[d]["fingerprint"] for d in step.depends_on if d in state.steps},
        "artifact": str(final), "metrics": result.metrics, "summary": result.summary,
        "started_at": started, "finished_at": finished, "duration_s": round(finished - started, 3),
    }
    if error:
        entry["error"] = error
    entry["lineage"] = _lineage(state, step)
    manifest = {"step": step.id, **{k: v for k, v in entry.items() if k != "artifact"}, "outputs": result.outputs,
                "inputs": {d: {"fingerprint": inputs[d].manifest.get("fingerprint"), "artifact": str(inputs[d].path)}
                           for d in step.depends_on if d in inputs}}
    write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    old = state.steps.get(step.id, {}).get("artifact")
    state.steps[step.id] = entry
    store.save(state)
    if old and old != str(final):
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return StepOutcome(step.id, "ran" if status == "done" else "gate_failed", finished - started,
                       summary=result.summary, error=error)
