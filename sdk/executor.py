"""Walk the plan's DAG, run each pending step through its backend, save state after every step.

Artifacts are written into a temporary folder and renamed into ``artifacts/<step>/<fingerprint>/`` only when the
step succeeds; a failed step leaves earlier artifacts and state intact, and the next apply resumes from there.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sdk import events as EV
from sdk import limits
from sdk import spec as S
from sdk.backends.base import Artifact, GateFailed, Registry, StepContext, StepResult, require
from sdk.errors import DslError
from sdk.hashing import HashCache
from sdk.integrity import adopt_manifests, damaged, manifest_sha256, read_manifest, record
from sdk.planner import plan as make_plan
from sdk.planner import refingerprint
from sdk.plans import Action, Plan, Step
from sdk.records.manifest import MANIFEST, manifest_text
from sdk.records.state import STATE_VERSION, Status
from sdk.records.state import entry as state_entry
from sdk.progress import Progress
from sdk.spec import kinds as K
from sdk.state import ARTIFACTS, State, StateStore, WorkdirLock, confined, remove_inside, write_atomic
from sdk.workdirs import workdir_for


@dataclass
class StepOutcome:
    id: str
    status: str  # ran | up_to_date | skipped | failed | gate_failed | deleted
    seconds: float = 0.0
    summary: str = ""
    error: str = ""
    fresh: bool = True  # False for a step that was up to date (a kept failed gate is reported, not re-run)


@dataclass
class ApplyResult:
    plan: Plan
    outcomes: list[StepOutcome] = field(default_factory=list)
    workdir: Path = Path(".")

    @property
    def ran(self) -> list[str]:
        return [o.id for o in self.outcomes if o.fresh and o.status in ("ran", "gate_failed")]

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
    """``.dsl/<domain>/`` beside the recipe (see :mod:`sdk.workdirs`, which decides it)."""
    from sdk.workdirs import default_workdir as _default

    return _default(spec)


def load_artifact(state: State, step_id: str) -> Optional[Artifact]:
    """The finished artifact of a step (its folder resolved inside the workdir, its manifest read), or None."""
    path = state.artifact_path(step_id)
    if path is None:
        return None
    manifest, _ = read_manifest(path, (state.steps.get(step_id) or {}).get("manifest_sha256"))
    return Artifact(step_id, path.resolve(), manifest) if manifest is not None else None


def finished_artifacts(state: State, only: Optional[Iterable[str]] = None) -> dict[str, Artifact]:
    out: dict[str, Artifact] = {}
    for step_id, entry in state.steps.items():
        if (only is None or step_id in only) and entry.get("status") in Status.finished():
            art = load_artifact(state, step_id)
            if art is not None:
                out[step_id] = art
    return out


def _clean_leftovers(workdir: Path, the_plan: Plan) -> None:
    """Remove what a killed apply left: temporary artifact folders, and checkpoints of fingerprints no step will
    run again (those of a step that will re-run with the same fingerprint stay: training resumes from them)."""
    arts = workdir / ARTIFACTS
    for tmp in arts.glob("*/.tmp-*") if arts.is_dir() else []:
        remove_inside(workdir, tmp)
    for half in workdir.glob(".state.json.*"):  # a state write killed before its rename
        half.unlink(missing_ok=True)
    keep = {(s.id, s.fingerprint[:16]) for s in the_plan.steps if s.action in (Action.CREATE, Action.REPLACE)}
    ckpts = workdir / "checkpoints"
    for folder in ckpts.glob("*/*") if ckpts.is_dir() else []:
        if (folder.parent.name, folder.name) not in keep:
            remove_inside(workdir, folder)


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
    skip_checks: bool = False,
    on_warning: Optional[Callable[[list[S.Problem]], None]] = None,
    recipe: Optional[str] = None,
) -> ApplyResult:
    """Plan and apply. ``on_step(step, event)`` is called with event "start" | "ran" | "up_to_date" |
    "skipped" | "failed" | "gate_failed" | "deleted" (the CLI prints from it). ``skip_checks`` turns failing
    environment checks into warnings, passed to ``on_warning`` (see :func:`sdk.planner.plan`). Each apply that
    runs a step writes its event log (:mod:`sdk.events`, ``recipe`` names the recipe there) and is tracked
    (:mod:`sdk.tracking`)."""
    workdir = workdir_for(spec, workdir)
    registry = registry or Registry()
    replace = tuple(replace)
    log = log or (lambda msg: None)
    notify = on_step or (lambda step, event: None)
    store = StateStore(workdir)
    progress = progress or Progress(enabled=False)
    with WorkdirLock(workdir), limits.scope(spec):  # the recipe's size limits hold for every step it runs
        state = store.load()
        cache = HashCache(state.hashes)
        the_plan = make_plan(spec, state, registry, backend=backend, replace=replace, target=target, hash_cache=cache,
                             skip_checks=skip_checks, on_warning=on_warning)
        if saved_plan is not None:
            _check_not_stale(saved_plan, the_plan, state)
        adopt_manifests(state)  # a workdir from before manifests were hashed: recorded once, saved with the next step
        state.domain = spec.name
        state.hashes = cache.entries
        result = ApplyResult(the_plan, workdir=workdir)
        _clean_leftovers(workdir, the_plan)
        run = EV.EventLog(workdir, recipe or str(spec.base_dir), spec.name, the_plan, log)
        with progress, run.recording(result):
            for step in the_plan.steps:
                if step.action is Action.DELETE:
                    folder = state.artifact_path(step.id)
                    entry = state.steps.pop(step.id, {})
                    if folder is not None:
                        remove_inside(workdir, folder.parent)
                    elif entry.get("artifact"):
                        log(f"{step.id}: its recorded artifact {entry['artifact']!r} is outside the workdir's "
                            "artifacts: not deleted")
                    store.save(state)
                    result.outcomes.append(StepOutcome(step.id, "deleted"))
                    run.step_finished(step, result.outcomes[-1])
                    notify(step, "deleted")
                    continue
                if step.action is not Action.NOOP:
                    # early cutoff: the inputs that ran before this step may have produced what they produced
                    # before, in which case this step is still up to date
                    step.fingerprint, step.inputs = refingerprint(spec, step, state)
                    entry = state.steps.get(step.id) or {}
                    if step.id not in set(replace) and entry.get("fingerprint") == step.fingerprint \
                            and entry.get("status") in Status.finished() \
                            and not damaged(state, step.id, entry):
                        step.action, step.reason = Action.NOOP, "up to date: its inputs produced the same output"
                if step.action is Action.NOOP:
                    entry = state.steps[step.id]
                    status = "gate_failed" if entry.get("status") == Status.GATE_FAILED.value else "up_to_date"
                    result.outcomes.append(StepOutcome(step.id, status, summary=entry.get("summary", ""),
                                                       error=entry.get("error", ""), fresh=False))
                    notify(step, status)
                    continue
                notify(step, "start")
                run.step_started(step)
                with run.job(step):
                    outcome = _run_step(spec, step, state, store, registry, workdir, options or {}, progress, log)
                result.outcomes.append(outcome)
                run.step_finished(step, outcome)
                notify(step, outcome.status)
                if outcome.status == "failed":
                    break
        if run.started:
            from sdk import tracking

            tracking.record_run(spec, workdir, run.run_id, state=state, warn=log)
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
    rel = f"{ARTIFACTS}/{step.id}/{step.fingerprint}"
    final = workdir / rel
    tmp = workdir / ARTIFACTS / step.id / f".tmp-{step.fingerprint[:16]}"
    checkpoints = workdir / "checkpoints" / step.id / step.fingerprint[:16]
    remove_inside(workdir, tmp)
    confined(workdir, tmp, checkpoints)  # a link inside artifacts/ or checkpoints/ is never written through
    started = time.time()
    try:
        tmp.mkdir(parents=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DslError(f"{workdir}: cannot write the artifact of {step.id} ({e.strerror or e}); the workdir must "
                       "be writable and its disk not full") from None
    inputs = finished_artifacts(state, only=step.depends_on)
    ctx = StepContext(spec=spec, step_id=step.id, kind=step.kind, label=step.label, block=block,
                      fingerprint=step.fingerprint, out_dir=tmp, workdir=workdir, checkpoint_dir=checkpoints,
                      inputs=inputs, progress=progress, log=log, options=dict(options), files=dict(step.files))
    status, error = Status.DONE.value, ""
    try:
        missing = [d for d in step.depends_on if d not in inputs]
        if missing:
            raise DslError(f"inputs {', '.join(missing)} have no finished artifact")
        require(backend)
        result = backend.run(ctx)
        if not isinstance(result, StepResult):
            raise DslError(f"backend {backend.name!r} returned {type(result).__name__}, not a StepResult")
        _check_outputs(step, backend.name, result)
    except GateFailed as e:
        result, status, error = e.result, Status.GATE_FAILED.value, str(e)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised for interrupts
        remove_inside(workdir, tmp)
        message = str(e) if isinstance(e, DslError) else f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and e.errno in (28, 30):  # ENOSPC, EROFS: say so plainly
            message = f"cannot write in {workdir} ({e.strerror}); free some space or make it writable"
        entry = dict(state.steps.get(step.id, {}))
        entry.update(status=Status.FAILED.value, error=message, failed_fingerprint=step.fingerprint,
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
    entry = state_entry(
        status=status, fingerprint=step.fingerprint, backend=step.backend,
        backend_version=step.backend_version, config=step.config, files=step.files,
        inputs=dict(step.inputs), artifact=rel, metrics=result.metrics, summary=result.summary,
        started_at=started, finished_at=finished, duration_s=round(finished - started, 3),
        state_version=STATE_VERSION,
    )
    if error:
        entry["error"] = error
    entry["lineage"] = _lineage(state, step)
    written = record(tmp)
    manifest = {"step": step.id, **{k: v for k, v in entry.items() if k != "artifact"}, "outputs": result.outputs,
                "written": written,
                "inputs": {d: {"fingerprint": state.steps[d].get("fingerprint"), "artifact": state.steps[d].get("artifact"),
                               "digest": step.inputs.get(d), "manifest_sha256": state.steps[d].get("manifest_sha256")}
                           for d in step.depends_on if d in state.steps}}
    facets = K.get_kind(step.kind).facets
    entry["facets"] = facets(manifest) if facets else {}
    manifest["facets"] = entry["facets"]
    text = manifest_text(manifest)  # checked against sdk.records.manifest.Manifest before it is written
    write_atomic(tmp / MANIFEST, text)
    entry["manifest_sha256"] = manifest_sha256(text)  # the applied configuration is under integrity too
    if final.exists():
        remove_inside(workdir, final)
    tmp.rename(final)
    old = state.artifact_path(step.id)
    state.steps[step.id] = entry
    store.save(state)
    if old is not None and old.resolve() != final.resolve():
        remove_inside(workdir, old)
    remove_inside(workdir, checkpoints)
    return StepOutcome(step.id, "ran" if status == Status.DONE.value else "gate_failed", finished - started,
                       summary=result.summary, error=error)


def _check_outputs(step: Step, backend: str, result: StepResult) -> None:
    """A backend returns every output its kind declares (later steps and systems read them)."""
    missing = [o for o in K.get_kind(step.kind).outputs if o not in result.outputs]
    if missing:
        raise DslError(f"backend {backend!r} did not return the declared output(s) {', '.join(missing)} of a "
                       f"{step.kind} step")
