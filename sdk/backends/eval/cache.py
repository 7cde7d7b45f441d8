"""Answers an eval re-uses across runs whose answers cannot differ: a new expert grade (or a new gate, seed or
bootstrap size) changes the eval's fingerprint, yet every system would answer exactly as before. Each system's
answers are kept in ``<workdir>/cache/eval/<step>/`` under a key of everything that decides them (the answering
configuration, the eval set and prompt files, the inputs' fingerprints); the grades file, the gate and the
statistics are left out of the key. Only the newest key is kept per system."""

from __future__ import annotations

import shutil
from pathlib import Path

from sdk.backends.base import StepContext
from sdk.hashing import digest

# attributes that change only how answers are scored, tested or gated, never which answers come back
NOT_ANSWERS = ("gate", "human", "judge_agreement", "bootstrap", "confidence", "seed", "batch_size", "contamination",
               "ngram", "fail_on_contamination", "backend")


def answers_key(ctx: StepContext) -> str:
    config = ctx.block.model_dump(mode="json", by_alias=True)
    for name in NOT_ANSWERS:
        config.pop(name, None)
    grades = ("grades", ctx.spec.name)
    files = {k: v for k, v in ctx.files.items() if Path(k).parts[:2] != grades}
    inputs = {d: art.manifest.get("fingerprint") for d, art in sorted(ctx.inputs.items())}
    return digest({"config": config, "files": files, "inputs": inputs})[:16]


def _folder(ctx: StepContext) -> Path:
    return ctx.workdir / "cache" / "eval" / ctx.step_id


def _name(sid: str) -> str:
    return sid.replace(":", "_").replace("/", "_")


def restore(ctx: StepContext, sid: str, partial: Path) -> bool:
    """Copy the cached answers of ``sid`` for this key into the checkpoint file ``partial`` (when it is empty)."""
    cached = _folder(ctx) / f"{answers_key(ctx)}-{_name(sid)}.jsonl"
    if partial.exists() or not cached.is_file():
        return False
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, partial)
    return True


def keep(ctx: StepContext, sid: str, partial: Path) -> None:
    """Keep the answers of ``sid`` (its checkpoint file) under this run's key; drop its older keys."""
    if not partial.is_file():
        return
    folder = _folder(ctx)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{answers_key(ctx)}-{_name(sid)}.jsonl"
    for old in folder.glob("[0-9a-f]" * 16 + f"-{_name(sid)}.jsonl"):
        if old != target:
            old.unlink(missing_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(partial, tmp)
    tmp.replace(target)
