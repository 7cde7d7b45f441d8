"""What was applied: a step's block as its manifest recorded it (:func:`applied_block`), the artifacts it read
(:func:`input_artifact`; those a serve step serves, :func:`served_artifacts`), an applied eval's items
(:func:`applied_eval_items`), and one line when the recipe has
changed since (:func:`drift`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from sdk.artifacts import Artifact
from sdk.errors import DslError
from sdk.evalsets import EvalItem, load_items, synth_items
from sdk.integrity import check_folder, read_manifest
from sdk.spec import kinds as K
from sdk.state import inside


def workdir_of(art: Artifact) -> Path:
    """An artifact lives at WORKDIR/artifacts/STEP/FINGERPRINT."""
    return Path(art.path).parents[2]


def applied_block(art: Artifact) -> Any:
    """The block as it was applied, validated again from the manifest's configuration."""
    kind = art.step_id.partition(".")[0]
    config = dict(art.manifest.get("config") or {})
    if isinstance(config.get("compute"), dict):  # training steps record the compute block they launched with
        config.pop("compute")
    try:
        return K.get_kind(kind).block.model_validate(config)
    except Exception as e:  # noqa: BLE001 - a manifest is data: a bad one is a damaged artifact
        raise DslError(f"the manifest of {art.step_id} ({art.path}) does not hold a valid {kind} configuration "
                       f"({type(e).__name__}); run dsl apply --replace {art.step_id}") from None


def input_artifact(art: Artifact, dep: str) -> Artifact:
    """The artifact a step read as its input ``dep`` when it ran (resolved inside the same workdir)."""
    record = (art.manifest.get("inputs") or {}).get(dep) or {}
    rel = record.get("artifact")
    path = inside(workdir_of(art), rel) if rel else None
    if path is None or not path.is_dir():
        raise DslError(f"{art.step_id} was applied with {dep}, whose artifact is gone; run dsl apply")
    manifest, problem = read_manifest(path, record.get("manifest_sha256"))  # checked like the step's own
    problem = problem or check_folder(path, manifest or {})  # its files too (a chat template edited in place)
    if problem or manifest is None:
        raise DslError(f"the artifact of {dep} used by {art.step_id} is damaged ({problem}): {path}; run dsl apply")
    return Artifact(dep, path.resolve(), manifest)


def applied_eval_items(art: Artifact, base_dir: Path) -> tuple[Any, list[EvalItem], str]:
    """The block, items and shown name of the applied eval step ``art``'s set, wherever it came from: a file of the
    recipe's folder ``base_dir``, or (``data = synth.X``) the candidates experts accepted, read from the synth
    artifact the eval itself read (an eval with none accepted has no items)."""
    block = applied_block(art)
    if isinstance(block.data, str):
        return block, load_items((Path(base_dir) / block.data).resolve(), block, block.data), block.data
    items, _ = synth_items(input_artifact(art, str(block.data)), block, empty_ok=True)
    return block, items, f"{block.data}/rows.jsonl"


def served_artifacts(serve: Artifact, names: Iterable[str]) -> dict[str, Artifact]:
    """The artifacts of the systems ``names`` as the serve step ``serve`` recorded them among its inputs, each
    checked as ``dsl verify`` checks it (its manifest against the sha256 the serve step recorded, then its files):
    the gateway runs the weights, adapter, tokenizer or index that was applied, evaluated and gated, or refuses,
    naming the artifact. A name the serve step did not read (an endpoint, ``general``) is left out."""
    inputs = serve.manifest.get("inputs") or {}
    return {name: input_artifact(serve, name) for name in sorted(names) if name in inputs}


def drift(spec: Any, state: Any, step_id: str) -> Optional[str]:
    """One line when the recipe's block differs from what was applied, naming the first changes."""
    from sdk.diffs import diff as _diff
    from sdk.spec.kinds import config_of as step_config

    kind, _, label = step_id.partition(".")
    block = getattr(spec, kind, {}).get(label)
    entry = state.steps.get(step_id) or {}
    if block is None or "config" not in entry:
        return None
    changes = _diff(entry["config"], step_config(spec, kind, block))
    if not changes:
        return None
    shown = ", ".join(c.replace(": ", " ", 1) for c in changes[:2]) + (", ..." if len(changes) > 2 else "")
    return f"{step_id} changed since it was applied ({shown}): using the applied version; run dsl apply"
