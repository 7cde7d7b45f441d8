"""A small deterministic backend for every kind of step, for tests and dry runs (``--backend test``).

It writes the step's config, the hashes of the files it reads and its inputs' facets into ``out.json`` and makes up metrics that depend only on
the fingerprint. ``options["test_fail"]`` (a step id) makes that step fail; ``options["test_sleep"]`` (seconds)
slows every step down (to test locks); eval steps honour their gate over their made-up metrics.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sdk import expr as E
from sdk.backends.base import Backend, GateFailed, StepContext, StepResult
from sdk.errors import DslError
from sdk.hashing import file_sha256
from sdk.spec.kinds import config_of, get_kind


def _score(fingerprint: str, salt: str) -> float:
    import hashlib

    return int(hashlib.sha256((fingerprint + salt).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class TestBackend(Backend):
    __test__ = False  # not a pytest class
    name = "test"
    version = "1"
    kinds = ("base_model", "corpus", "dataset", "pretrain", "finetune", "rag", "eval", "route", "serve")  # any kind

    def environment(self, ctx: Any) -> list:
        return []  # deterministic, needs nothing from the machine

    def run(self, ctx: StepContext) -> StepResult:
        if ctx.options.get("test_sleep"):
            time.sleep(float(ctx.options["test_sleep"]))
        if ctx.options.get("test_fail") == ctx.step_id:
            raise DslError(f"{ctx.step_id}: failing on purpose (test_fail)")
        reads = get_kind(ctx.kind).reads
        files = sorted(file_sha256(p) for p in (reads(ctx.spec, ctx.block) if reads else []) if p.is_file())
        # what a real backend's output depends on: its configuration, the files it reads and its inputs' outputs
        record = {"step": ctx.step_id, "config": config_of(ctx.spec, ctx.kind, ctx.block), "files": files,
                  "inputs": {k: a.manifest.get("facets") for k, a in sorted(ctx.inputs.items())}}
        (ctx.out_dir / "out.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        with ctx.progress.task(f"{ctx.step_id} (test)", total=3) as task:
            for _ in range(3):
                task.advance()
        metrics: dict[str, Any] = {}
        outputs: dict[str, Any] = {"out": "out.json", **{o: "out.json" for o in get_kind(ctx.kind).outputs}}
        if ctx.kind == "eval":
            block: Any = ctx.block
            for system in block.systems:
                sid = str(system) if not hasattr(system, "url") else f"endpoint:{system.model}"
                metrics[sid] = {}
                for m in block.metrics:
                    v = round(_score(ctx.fingerprint, sid + m), 4)
                    metrics[sid][m] = {"value": v, "ci_low": round(v * 0.9, 4), "ci_high": round(min(1, v * 1.1), 4)}
            result = StepResult(metrics=metrics, outputs=outputs, summary=f"test eval of {len(block.systems)} systems")
            if block.gate is not None:
                def lookup(m: E.Metric) -> float:
                    return metrics[m.system][m.metric][m.bound]

                if not E.evaluate(block.gate, lookup):
                    raise GateFailed(f"gate {E.to_text(block.gate)} failed (margin {E.margin(block.gate, lookup)})", result)
            return result
        if ctx.kind in ("pretrain", "finetune"):
            metrics = {"train_loss": round(1 + _score(ctx.fingerprint, "loss"), 4)}
        return StepResult(metrics=metrics, outputs=outputs, summary=f"test {ctx.kind} step")

