"""``dataset LABEL { path = "x.jsonl" }``: supervised fine-tuning data."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import content_facets, declare
from sdk.spec.paths import named_files, path_problem
from sdk.spec.values import Block, Problem, ref_of


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    problem = path_problem(spec, block.path) if check_files else None
    return [Problem(path=("dataset", label, "path"), message=problem)] if problem else []


@declare("dataset", backend=("jsonl", "sdk.backends.data.datasets:JsonlDatasetBackend"), outputs=("train",),
         check=_check, reads=lambda spec, block: named_files(spec, block, ("path",)), facets=content_facets)
class DatasetBlock(Block):
    """Supervised fine-tuning data in JSONL."""

    path: str = Field(description="JSONL file relative to the recipe")
    format: Literal["chat", "instruction", "text"] = Field(default="chat", description="Row shape")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping, e.g. { instruction = \"question\", output = \"answer\" }"
        " (keys: messages, instruction, input, output, text)",
    )
    system_prompt: Optional[str] = Field(default=None, description="System message prepended to every example")
    validation_split: float = Field(default=0.0, ge=0.0, lt=0.9, description="Share held out for eval loss")
    retrieval: Optional[ref_of("rag")] = Field(  # type: ignore[valid-type]
        default=None,
        description="Rag system whose retrieved chunks go into each row's last user turn, rendered with its prompt "
        "(retrieval-augmented fine-tuning)",
    )
    keep_bare: bool = Field(default=True, description="With retrieval: also keep each row as written, without chunks")
    backend: Optional[str] = Field(default=None, description="Backend name (default: jsonl)")

    @model_validator(mode="after")
    def _retrieval_needs_turns(self) -> "DatasetBlock":
        if self.retrieval is not None and self.format == "text":
            raise PydanticCustomError("incompatible", "retrieval applies to formats chat and instruction (rows with a "
                                      "user turn), not to format text", {})
        if self.retrieval is None and "keep_bare" in self.model_fields_set:
            raise PydanticCustomError("incompatible", "keep_bare applies only with retrieval = rag.X (it keeps each "
                                      "row without chunks too); drop keep_bare", {})
        return self

    @model_validator(mode="after")
    def _known_fields(self) -> "DatasetBlock":
        allowed = {"chat": {"messages"}, "instruction": {"instruction", "input", "output"}, "text": {"text"}}[self.format]
        bad = sorted(set(self.fields) - allowed)
        if bad:
            raise PydanticCustomError(
                "incompatible",
                "fields {bad} do not apply to format {fmt} (it maps {allowed})",
                {"bad": ", ".join(bad), "fmt": self.format, "allowed": ", ".join(sorted(allowed))},
            )
        return self
