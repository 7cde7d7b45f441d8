"""The ``dataset`` step: read SFT data in JSONL, check every row (errors name FILE:LINE), normalise it.

Rows become ``{"messages": [...], "_line": N}`` for formats chat and instruction (instruction + input as the user
turn, output as the assistant turn) and ``{"text": ..., "_line": N}`` for format text. The same reading runs at plan
time (:mod:`sdk.datachecks`, for every backend), so a malformed line is reported before any compute is spent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.backends.base import Backend, StepContext, StepResult
from sdk.backends.data.rows import read_rows, rel, split  # noqa: F401 - read_rows, split re-exported
from sdk.backends.rag.system import RagSystem


def with_retrieval(rows: list[dict[str, Any]], rag: Any, keep_bare: bool, bar: Any = None) -> tuple[list[dict[str, Any]], int]:
    """Each row's last user turn replaced by the rag system's prompt rendered with the chunks it retrieves for that
    turn, exactly as the rag system will prompt its generator; with ``keep_bare`` the row as written comes first.
    Returns the rows and how many carry chunks."""
    out: list[dict[str, Any]] = []
    added = 0
    for r in rows:
        msgs = r["messages"]
        turn = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
        if keep_bare or turn is None:
            out.append(r)
        if turn is not None:
            question = msgs[turn]["content"]
            prompt = rag.render_prompt(question, rag.retrieve(question))
            out.append({**r, "messages": [*msgs[:turn], {"role": "user", "content": prompt}, *msgs[turn + 1:]]})
            added += 1
        if bar is not None:
            bar.advance()
    return out, added


class JsonlDatasetBackend(Backend):
    name = "jsonl"
    version = "1"
    kinds = ("dataset",)

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        path = ctx.spec.resolve_path(block.path)
        rows = read_rows(path, block, rel(path, Path.cwd()))
        train, val = split(rows, block.validation_split)  # before retrieval: a row and its copy stay on one side
        added = 0
        if block.retrieval is not None:
            rag = RagSystem.open(ctx.input(block.retrieval), with_generator=False, base_dir=ctx.spec.base_dir)
            with ctx.progress.task(f"{ctx.step_id}: retrieving for {len(rows)} rows", total=len(rows)) as bar:
                train, n_train = with_retrieval(train, rag, block.keep_bare, bar)
                val, n_val = with_retrieval(val, rag, block.keep_bare, bar)
                added = n_train + n_val
        for name, part in (("train.jsonl", train), ("validation.jsonl", val)):
            with open(ctx.out_dir / name, "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        fmt = "text" if block.format == "text" else "chat"
        return StepResult(
            metrics={"rows": len(rows), "train_rows": len(train), "validation_rows": len(val), "with_retrieval": added},
            outputs={"train": "train.jsonl", "validation": "validation.jsonl", "format": fmt, "source": str(path)},
            summary=f"{len(train)} training rows, {len(val)} validation rows from {block.path}"
                    + (f" ({added} with chunks from {block.retrieval})" if block.retrieval is not None else ""),
        )
