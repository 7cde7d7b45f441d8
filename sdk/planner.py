"""spec + state -> plan. Pure: no I/O beyond hashing the files that steps read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from sdk import spec as S
from sdk.backends.base import CheckContext, Registry, backend_name
from sdk.errors import DslError
from sdk.graph import Graph
from sdk.hashing import HashCache, digest
from sdk.plans import Action, Plan, Step

STEP_KINDS = ("base_model", "corpus", "dataset", "pretrain", "finetune", "rag", "eval", "route", "serve")


class PlanProblems(DslError):
    """Problems found by backends' plan-time checks; each has a spec path so the DSL can locate it."""

    def __init__(self, problems: list[S.Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def dependencies(spec: S.Spec, kind: str, label: str, block: S.Block) -> list[str]:
    deps = [str(r) for r in S.refs_of(block) if r.kind != "compute"]
    if kind == "route":
        deps += [f"eval.{e}" for e in spec.eval]
    if kind == "serve":
        deps += [f"route.{r}" for r in spec.route] + [f"eval.{e}" for e in spec.eval]
        deps += [f"{k}.{lbl}" for k in ("pretrain", "finetune", "rag") for lbl in getattr(spec, k)]
    return list(dict.fromkeys(deps))


def build_graph(spec: S.Spec) -> Graph:
    g = Graph()
    for kind, label, block in spec.blocks():
        if kind in STEP_KINDS:
            g.add(f"{kind}.{label}", dependencies(spec, kind, label, block))
    return g


def _compute_for(spec: S.Spec, block: S.Block) -> Optional[S.ComputeBlock]:
    """The compute block a training step launches with: the one it names, else the domain's only one."""
    if "compute" not in type(block).model_fields:
        return None
    ref = getattr(block, "compute", None)
    if isinstance(ref, S.Ref):
        return spec.compute.get(ref.label)
    return next(iter(spec.compute.values()), None)


def step_config(spec: S.Spec, kind: str, block: S.Block) -> dict[str, Any]:
    config = block.model_dump(mode="json", by_alias=True)
    config.pop("backend", None)
    compute = _compute_for(spec, block)
    if compute is not None:
        config["compute"] = compute.model_dump(mode="json")
    return config


def files_read(spec: S.Spec, kind: str, block: S.Block, extra: Iterable[Path]) -> list[Path]:
    import glob as _glob

    base = spec.base_dir
    paths: list[Path] = []
    if isinstance(block, S.CorpusBlock):
        for pattern in block.paths:
            paths += [Path(p) for p in sorted(_glob.glob(str(base / pattern), recursive=True)) if Path(p).is_file()]
    for attr in ("path", "data", "examples"):
        value = getattr(block, attr, None)
        if isinstance(value, str) and kind != "base_model":
            paths.append(base / value)
    for attr in ("prompt", "chat_template", "rubric"):
        value = getattr(block, attr, None)
        if isinstance(value, S.FileRef):
            paths.append(base / value.path)
    paths += list(extra)
    return list(dict.fromkeys(p.resolve() for p in paths))


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{name}: (unset) -> {_short(new[k])}")
            elif k not in new:
                out.append(f"{name}: {_short(old[k])} -> (unset)")
            else:
                out += _diff(old[k], new[k], name)
        return out
    if old != new:
        return [f"{prefix}: {_short(old)} -> {_short(new)}"]
    return []


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:g}"
    return text if len(text) <= 60 else text[:57] + "..."


def plan(
    spec: S.Spec,
    state: Any,
    registry: Optional[Registry] = None,
    *,
    backend: Optional[str] = None,
    replace: Iterable[str] = (),
    target: Optional[Iterable[str]] = None,
    hash_cache: Optional[HashCache] = None,
    check: bool = True,
) -> Plan:
    """Make a plan. ``state`` is an sdk.state.State (or None for a fresh workdir). ``backend`` forces one backend
    for every step (e.g. "test"); ``replace`` forces steps to re-run; ``target`` limits the plan to those steps and
    their dependencies."""
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
        config = step_config(spec, kind, block)
        files = {_rel(p, spec.base_dir): hash_cache.file_hash(p)
                 for p in files_read(spec, kind, block, be.extra_inputs(spec, kind, label, block)) if p.is_file()}
        deps = graph.deps[step_id]
        fp = digest({"kind": kind, "config": config, "backend": name, "backend_version": be.version,
                     "inputs": {d: fps[d] for d in deps}, "files": files})
        fps[step_id] = fp
        if wanted is not None and step_id not in wanted:
            continue
        old = recorded.get(step_id)
        changes: list[str] = []
        if old is None:
            action, reason = Action.CREATE, "not applied yet"
        elif step_id in replace:
            action, reason = Action.REPLACE, "forced by --replace"
        elif old.get("status") == "failed":
            action, reason = Action.REPLACE if old.get("fingerprint") else Action.CREATE, \
                f"the last run failed: {old.get('error', 'unknown error')}"
        elif old.get("fingerprint") != fp:
            action = Action.REPLACE
            changes = [f"config {c}" for c in _diff(old.get("config", {}), config)]
            changes += [f"file {c}" for c in _diff(old.get("files", {}), files)]
            if old.get("backend") != name or old.get("backend_version") != be.version:
                changes.append(f"backend {old.get('backend')}@{old.get('backend_version')} -> {name}@{be.version}")
            changed_inputs = [d for d in deps if (old.get("inputs") or {}).get(d) != fps[d]]
            reasons = []
            if any(c.startswith("config") for c in changes):
                reasons.append("configuration changed")
            if any(c.startswith("file") for c in changes):
                reasons.append("input files changed")
            for d in changed_inputs:
                reasons.append(f"input {d} {'will change' if actions.get(d) in (Action.CREATE, Action.REPLACE) else 'changed'}")
            if any(c.startswith("backend") for c in changes):
                reasons.append("backend changed")
            reason = "; ".join(reasons) or "fingerprint changed"
        elif old.get("artifact") and not Path(old["artifact"]).is_dir():
            action, reason = Action.REPLACE, f"artifact {old['artifact']} is missing"
        else:
            action, reason = Action.NOOP, "up to date"
            if old.get("status") == "gate_failed":
                reason = f"up to date (its gate failed: {old.get('error', '')})"
        actions[step_id] = action
        steps.append(Step(step_id, kind, label, name, be.version, action, fp, list(deps), reason, changes,
                          config, files))
    if problems:
        raise PlanProblems(problems)
    if wanted is None:
        for step_id, old in recorded.items():
            if step_id not in fps:
                kind, _, label = step_id.partition(".")
                steps.append(Step(step_id, kind, label, old.get("backend", ""), old.get("backend_version", ""),
                                  Action.DELETE, old.get("fingerprint", ""), [], "no longer in the spec"))
    return Plan(spec.name, steps, serial=getattr(state, "serial", 0), lineage=getattr(state, "lineage", None))

