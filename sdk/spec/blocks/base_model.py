"""``base_model LABEL { id | path | architecture ... }``: where a model starts."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import declare, source_facets
from sdk.spec.objects import Llama
from sdk.spec.paths import named_files, path_problem
from sdk.spec.values import Block, Problem, TextOrFile


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    if check_files and block.path is not None:
        problem = path_problem(spec, block.path, must_be_dir=True, confined=False)
        if problem:
            return [Problem(path=("base_model", label, "path"), message=problem)]
    return []


@declare("base_model", role="model", serving="model", opener="sdk.backends.eval.clients:open_model",
         backend=("hf", "sdk.backends.base_model:HFModelBackend"),
         outputs=("model_source",), check=_check, reads=lambda spec, block: named_files(spec, block),
         facets=source_facets)
class BaseModelBlock(Block):
    """A starting model: a hub id, a local path, or an architecture to pretrain from scratch."""

    id: Optional[str] = Field(default=None, description="Hugging Face hub id, e.g. meta-llama/Meta-Llama-3-8B-Instruct")
    path: Optional[str] = Field(default=None, description="Local folder with config.json and weights (relative to the recipe)")
    architecture: Optional[Llama] = Field(default=None, description="Build a new model from scratch: llama { ... }")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch, tag or commit)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="Weights' dtype when loaded")
    chat_template: Optional[TextOrFile] = Field(default=None, description="Jinja chat template overriding the tokenizer's")
    trust_remote_code: bool = Field(default=False, description="Allow model code from the hub (off by default)")
    backend: Optional[str] = Field(default=None, description="Backend name from the registry (default: hf)")

    @field_validator("id")
    @classmethod
    def _hub_id(cls, v: Optional[str]) -> Optional[str]:
        """A hub repository id as the hub spells one (``org/name``), checked before any download is tried."""
        if v is None or HUB_ID.match(v) and "--" not in v and ".." not in v and len(v) <= 96:
            return v
        name = v.split("huggingface.co/", 1)[-1].split("/tree/", 1)[0].strip("/") if "://" in v else None
        raise PydanticCustomError("hub_id", "{value} is not a hub model id (org/name: letters, digits, '-', '_' and "
                                  "'.'){more}", {"value": repr(v)[:80], "more": f"; write {name!r}"
                                  if name and HUB_ID.match(name) else "; a local folder is path = \"...\""})

    @model_validator(mode="after")
    def _one_source(self) -> "BaseModelBlock":
        given = [k for k in ("id", "path", "architecture") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "incompatible",
                "a base_model needs exactly one of id, path or architecture (found {found})",
                {"found": ", ".join(given) or "none"},
            )
        return self
