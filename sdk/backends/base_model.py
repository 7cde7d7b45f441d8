"""The ``base_model`` step: resolves a base model (a local folder, a hub id, or an architecture trained from scratch)
and writes the block's chat template into its artifact. Loading code shared by all steps is in
:mod:`sdk.backends.models`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk import envchecks as E
from sdk.backends.base import Backend, CheckContext, StepContext, StepResult
from sdk.backends.models import TEMPLATE_FILE, recipe_template
from sdk.errors import DslError
from sdk.spec import Problem


class HFModelBackend(Backend):
    """Resolves a base model: checks a local folder, records a hub id, or passes on an architecture; the block's
    chat template is written into the artifact (``chat_template.jinja``), where the steps that train from it read
    it, so a new template changes what the step produced and re-runs them."""

    name = "hf"
    version = "2"  # 2: the chat template is part of the step's output
    kinds = ("base_model",)

    def environment(self, ctx: CheckContext) -> list:
        block: Any = ctx.block
        problems = super().environment(ctx)
        if block.id is not None:
            problems += E.hub_model(ctx, block.id, ctx.path + ("id",), block.revision)
        elif block.path is not None:
            problems += E.model_folder(ctx, ctx.spec.resolve_path(block.path), block.path, ctx.path + ("path",))
        return problems

    def check(self, ctx: CheckContext) -> list:
        block = ctx.block
        problems = []
        path = getattr(block, "path", None)
        if path is not None:
            folder = ctx.spec.resolve_path(path)
            if folder.is_dir() and not (folder / "config.json").is_file():
                problems.append(Problem(path=ctx.path + ("path",),
                                        message=f"{path!r} has no config.json: not a transformers model folder"))
        return problems

    def run(self, ctx: StepContext) -> StepResult:
        block: Any = ctx.block
        if block.architecture is not None:
            outputs = {"model_source": "scratch", "architecture": block.architecture.model_dump()}
            summary = f"new {block.architecture.type} architecture, trained from scratch by a pretrain step"
        elif block.path is not None:
            folder = ctx.spec.resolve_path(block.path)
            if not (folder / "config.json").is_file():
                raise DslError(f"base_model.{ctx.label}: {folder} is not a transformers model folder (no config.json)")
            outputs = {"model": str(folder), "model_source": "local"}
            summary = f"local model {folder}"
        else:
            outputs = {"model": block.id, "model_source": "hub", "revision": block.revision}
            summary = f"hub model {block.id}" + (f"@{block.revision}" if block.revision else "")
        outputs["dtype"] = block.dtype
        template = recipe_template(ctx.spec, block)
        if template is not None:  # what later steps train and serve with: in the artifact, so in its facets
            (ctx.out_dir / TEMPLATE_FILE).write_text(template, encoding="utf-8")
            outputs["chat_template"] = TEMPLATE_FILE
        return StepResult(outputs=outputs, summary=summary)

    def extra_inputs(self, spec: Any, kind: str, label: str, block: Any) -> list[Path]:
        if getattr(block, "path", None):
            folder = spec.resolve_path(block.path)
            return [p for p in sorted(folder.glob("*")) if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja")]
        return []
