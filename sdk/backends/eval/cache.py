"""Answers an eval re-uses across runs, item by item: a new expert grade (or a new gate, seed or bootstrap size)
changes the eval's fingerprint, yet every system would answer exactly as before; an item added to, edited in or
accepted into the eval set (a file, or a reviewed synth step) changes that item only. Each system's answers are
kept in ``<workdir>/cache/eval/<step>/`` under a key of everything that decides them but the items themselves (the
answering configuration, the prompt files, the systems' fingerprints), and each answer carries its item's digest
(every field of the item but its line): an answer is reused only for an item with the same id and digest. The
grades file, the gate and the statistics are left out of the key. Only the newest key is kept per system."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sdk.backends.base import StepContext
from sdk.evalsets import EvalItem
from sdk.hashing import digest

# attributes that change only how answers are scored, tested or gated, never which answers come back
NOT_ANSWERS = ("gate", "human", "judge_agreement", "bootstrap", "confidence", "seed", "batch_size", "contamination",
               "ngram", "fail_on_contamination", "backend")


def answers_key(ctx: StepContext) -> str:
    config = ctx.block.model_dump(mode="json", by_alias=True)
    for name in (*NOT_ANSWERS, "data"):  # the items are matched one by one (item_key), not as a whole file
        config.pop(name, None)
    data = ctx.block.data
    items_file = ctx.spec.resolve_path(data) if isinstance(data, str) else None
    grades = ("grades", ctx.spec.name)
    files = {k: v for k, v in ctx.files.items()
             if Path(k).parts[:2] != grades and (items_file is None or ctx.spec.resolve_path(k) != items_file)}
    inputs = {d: art.manifest.get("fingerprint") for d, art in sorted(ctx.inputs.items()) if d != str(data)}
    return digest({"config": config, "files": files, "inputs": inputs})[:16]


def item_key(item: EvalItem) -> str:
    """What decides an item's answer and its judged score: every field but the line it was read from."""
    return digest({k: v for k, v in item.to_json().items() if k != "line"})[:16]


def _folder(ctx: StepContext) -> Path:
    return ctx.workdir / "cache" / "eval" / ctx.step_id


def _name(sid: str) -> str:
    return sid.replace(":", "_").replace("/", "_")


def restore(ctx: StepContext, sid: str, partial: Path, items: list[EvalItem]) -> int:
    """Copy the cached answers of ``sid`` for this key whose item is still in the set, unchanged, into the
    checkpoint file ``partial`` (when it is empty); how many."""
    cached = _folder(ctx) / f"{answers_key(ctx)}-{_name(sid)}.jsonl"
    if partial.exists() or not cached.is_file():
        return 0
    wanted = {it.id: item_key(it) for it in items}
    kept = []
    for line in cached.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str) and row.get("item") is not None \
                and wanted.get(row["id"]) == row["item"]:
            kept.append(line)
    if kept:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return len(kept)


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
