"""spec + state -> plan. Pure: no I/O beyond hashing the files that steps read and stat-ing artifacts.

Fingerprints follow what inputs *produced*, not how they were configured (early cutoff): a step's fingerprint
holds, for each dependency, the digest of the facets of that dependency's outputs it reads (declared by its kind).
A dependency that will re-run has no output yet: the dependent is planned ``~`` ("input X will change"), and the
executor decides again once X has run: when X produced what it produced before, the dependent stays up to date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sdk import limits
from sdk import spec as S
from sdk.backends.base import CheckContext, Registry, backend_name
from sdk.datachecks import data_problems
from sdk.diffs import diff as _diff
from sdk.errors import DslError
from sdk.graph import Graph
from sdk.hashing import HashCache, digest
from sdk.integrity import damaged
from sdk.plans import Action, Plan, Step
from sdk.records.state import Status
from sdk.spec import kinds as K
from sdk.spec.kinds import config_of as step_config


class PlanProblems(DslError):
    """Problems found by backends' plan-time checks; each has a spec path so the DSL can locate it."""

    def __init__(self, problems: list[S.Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def dependencies(spec: Any, kind: str, label: str, block: S.Block) -> dict[str, Optional[tuple[str, ...]]]:
    """step id -> the facets of its outputs this step reads (None: all of them; (): only the order)."""
    decl = K.get_kind(kind)
    steps = set(K.step_kinds())
    deps: dict[str, Optional[tuple[str, ...]]] = {}
    for ref in S.refs_of(block):
        if ref.kind in steps:
            deps[str(ref)] = decl.consumes(spec, label, block, str(ref)) if decl.consumes else None
    for dep, facets in (decl.implicit(spec, label, block) if decl.implicit else []):
        if dep not in deps or deps[dep] is not None and facets is not None:
            deps[dep] = facets if dep not in deps else tuple(dict.fromkeys((deps[dep] or ()) + (facets or ())))
        elif facets is None:
            deps[dep] = None
    deps.pop(f"{kind}.{label}", None)
    return deps


def build_graph(spec: Any) -> Graph:
    g = Graph()
    steps = set(K.step_kinds())
    for kind, label, block in spec.blocks():
        if kind in steps:
            g.add(f"{kind}.{label}", list(dependencies(spec, kind, label, block)))
    return g


def files_read(spec: Any, kind: str, block: S.Block, extra: Iterable[Path]) -> list[Path]:
    decl = K.get_kind(kind)
    paths = list(decl.reads(spec, block)) if decl.reads else []
    paths += list(extra)
    return list(dict.fromkeys(p.resolve() for p in paths))


def input_token(entry: Optional[dict[str, Any]], facets: Optional[tuple[str, ...]], pending_fp: Optional[str]) -> str:
    """What a dependent's fingerprint holds for one input: the digest of the facets it reads of that input's last
    output, or ``pending:<fp>`` while the input has yet to run."""
    if facets == ():
        return "order"
    if pending_fp is not None or entry is None or "facets" not in entry:
        return f"pending:{pending_fp or (entry or {}).get('fingerprint', '')}"
    have = entry["facets"]
    return digest({k: have.get(k) for k in sorted(have)} if facets is None else {k: have.get(k) for k in facets})


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def fingerprint(kind: str, config: dict[str, Any], backend: str, version: str, inputs: dict[str, str],
                files: dict[str, str]) -> str:
    return digest({"kind": kind, "config": config, "backend": backend, "backend_version": version,
                   "inputs": inputs, "files": files})


def plan(
    spec: Any,
    state: Any,
    registry: Optional[Registry] = None,
    *,
    backend: Optional[str] = None,
    replace: Iterable[str] = (),
    target: Optional[Iterable[str]] = None,
    hash_cache: Optional[HashCache] = None,
    check: bool = True,
    skip_checks: bool = False,
    on_warning: Optional[Callable[[list[S.Problem]], None]] = None,
) -> Plan:
    """Make a plan. ``state`` is an sdk.state.State (or None for a fresh workdir). ``backend`` forces one backend
    for every step (e.g. "test"); ``replace`` forces steps to re-run; ``target`` limits the plan to those steps and
    their dependencies. With ``check``, the steps that will run also get their backends' environment checks
    (``Backend.environment``): a failing one stops the plan, unless ``skip_checks`` makes it a warning; warnings
    go to ``on_warning`` (a list of located problems). Their data files are read too, by the steps' own readers
    (:mod:`sdk.datachecks`, whatever the backend): a bad row stops the plan, ``skip_checks`` or not."""
    registry = registry or Registry()
    hash_cache = hash_cache or HashCache()
    recorded: dict[str, Any] = dict(getattr(state, "steps", {}) or {})
    graph = build_graph(spec)
    order = graph.order()
    replace = set(replace)
    unknown = [s for s in list(replace) + list(target or []) if s not in graph.deps]
    if unknown:
        hint = S.suggest(unknown[0], order)
        raise DslError(f"no step named {unknown[0]!r}" + (f"; {hint}" if hint else f"; steps: {', '.join(order)}"))
    wanted: Optional[set[str]] = None
    if target:
        wanted = set()
        for t in target:
            wanted |= {t} | graph.ancestors(t)

    problems: list[S.Problem] = []
    warnings: list[S.Problem] = []
    notes: list[S.Problem] = []
    steps: list[Step] = []
    fps: dict[str, str] = {}
    actions: dict[str, Action] = {}
    for step_id in order:
        kind, _, label = step_id.partition(".")
        block = getattr(spec, kind)[label]
        name = backend_name(kind, block, backend)
        be = registry.get(name)
        if kind not in be.kinds and name != "test":
            raise DslError(f"backend {name!r} cannot run {kind} steps (it runs {', '.join(be.kinds)})")
        if check:
            problems += be.check(CheckContext(spec, kind, label, block))
            decl = K.get_kind(kind)
            if decl.plan_check is not None:
                problems += decl.plan_check(spec, label, block)
        config = step_config(spec, kind, block)
        files = {_rel(p, spec.base_dir): hash_cache.file_hash(p)
                 for p in files_read(spec, kind, block, be.extra_inputs(spec, kind, label, block)) if p.is_file()}
        deps = dependencies(spec, kind, label, block)
        inputs = {d: input_token(recorded.get(d), facets,
                                 fps[d] if actions.get(d, Action.NOOP) is not Action.NOOP else None)
                  for d, facets in deps.items()}
        fp = fingerprint(kind, config, name, be.version, inputs, files)
        fps[step_id] = fp
        if wanted is not None and step_id not in wanted:
            actions[step_id] = Action.NOOP if recorded.get(step_id, {}).get("fingerprint") == fp else Action.REPLACE
            continue
        old = recorded.get(step_id)
        changes: list[str] = []
        if old is None:
            action, reason = Action.CREATE, "not applied yet"
        elif step_id in replace:
            action, reason = Action.REPLACE, "forced by --replace"
        elif old.get("status") == Status.FAILED.value:
            action, reason = Action.REPLACE if old.get("fingerprint") else Action.CREATE, \
                f"the last run failed: {old.get('error', 'unknown error')}"
        elif old.get("fingerprint") != fp:
            action = Action.REPLACE
            changes = [f"config {c}" for c in _diff(old.get("config", {}), config)]
            changes += [f"file {c}" for c in _diff(old.get("files", {}), files)]
            if old.get("backend") != name or old.get("backend_version") != be.version:
                changes.append(f"backend {old.get('backend')}@{old.get('backend_version')} -> {name}@{be.version}")
            old_inputs = old.get("inputs") or {}
            reasons = []
            if any(c.startswith("config") for c in changes):
                reasons.append("configuration changed")
            if any(c.startswith("file") for c in changes):
                reasons.append("input files changed")
            older = old.get("state_version", 1) < 2
            for d in deps:
                if actions.get(d) in (Action.CREATE, Action.REPLACE) and inputs[d] != "order":
                    reasons.append(f"input {d} will change")
                elif old_inputs.get(d) != inputs[d] and not older:
                    reasons.append(f"input {d} changed" if d in old_inputs else f"input {d} added")
            if any(c.startswith("backend") for c in changes):
                reasons.append("backend changed")
            if older and deps and not any(r.startswith("input") for r in reasons):
                reasons.append("workdir from an older version: inputs are now keyed by what they produced (once)")
            reason = "; ".join(reasons) or "fingerprint changed"
        else:
            problem = damaged(state, step_id, old)
            if problem:
                action, reason = Action.REPLACE, f"artifact damaged: {problem}"
            else:
                action, reason = Action.NOOP, "up to date"
                if old.get("status") == Status.GATE_FAILED.value:
                    reason = f"up to date (its gate failed: {old.get('error', '')})"
        if check and action in (Action.CREATE, Action.REPLACE):
            for p in be.environment(CheckContext(spec, kind, label, block)):
                into = warnings if skip_checks or getattr(p, "severity", "error") == "warning" else problems
                if all((q.path, q.message) != (p.path, p.message) for q in into):
                    into.append(p)
            with limits.scope(spec):  # the data files it will read (sdk.datachecks), under the recipe's limits
                found = data_problems(spec, kind, label, block)
            for p in found:  # a data warning (sdk.datachecks: severity "warning") is shown, and the plan goes on
                into = notes if getattr(p, "severity", "error") == "warning" else problems
                if all((q.path, q.message) != (p.path, p.message) for q in into):
                    into.append(p)
        actions[step_id] = action
        steps.append(Step(step_id, kind, label, name, be.version, action, fp, list(deps), reason, changes,
                          config, files, inputs))
    warnings += notes if not problems else []  # the data's warnings are said once its errors are fixed
    if warnings and on_warning is not None:
        on_warning(warnings)
    if problems:
        raise PlanProblems(problems)
    if wanted is None:
        for step_id, old in recorded.items():
            if step_id not in fps:
                kind, _, label = step_id.partition(".")
                steps.append(Step(step_id, kind, label, old.get("backend", ""), old.get("backend_version", ""),
                                  Action.DELETE, old.get("fingerprint", ""), [], "no longer in the spec"))
    return Plan(spec.name, steps, serial=getattr(state, "serial", 0), lineage=getattr(state, "lineage", None))


def refingerprint(spec: Any, step: Step, state: Any) -> tuple[str, dict[str, str]]:
    """The fingerprint of a planned step now that the inputs before it have run (the executor's second look)."""
    block = getattr(spec, step.kind)[step.label]
    deps = dependencies(spec, step.kind, step.label, block)
    inputs = {d: input_token(state.steps.get(d), facets, None) for d, facets in deps.items()}
    return fingerprint(step.kind, step.config, step.backend, step.backend_version, inputs, step.files), inputs
