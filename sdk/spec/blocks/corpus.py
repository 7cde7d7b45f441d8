"""``corpus LABEL { paths = [...] }``: domain documents, ingested, cleaned, deduplicated and chunked."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Split
from sdk.spec.paths import expand, path_problem, shown_path
from sdk.spec.values import Block, Count, Fraction, Problem


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    out, jsonl = [], []
    for i, pattern in enumerate(block.paths):
        problem = path_problem(spec, pattern, glob=True) if check_files else expand(spec, pattern)[1] \
            if pattern.startswith("/") or ".." in pattern else None
        if problem:
            out.append(Problem(path=("corpus", label, "paths", i), message=problem))
        elif check_files:
            big = _oversized(spec, pattern, block.max_file_mb)
            jsonl.append(block.format == "jsonl" or any(f.suffix.lower() == ".jsonl" for f in expand(spec, pattern)[0]))
            if big:
                out.append(Problem(path=("corpus", label, "paths", i), message=big,
                                   hint=f"raise max_file_mb in the corpus block (now {block.max_file_mb}); chunking "
                                        "takes about 6 times a file's size in memory"))
    if "text_field" in block.model_fields_set and block.text_field != "text" and jsonl and not any(jsonl) and not out:
        out.append(Problem(path=("corpus", label, "text_field"), message=f"text_field applies to JSONL files, and no "
                           f"file of corpus.{label} is JSONL (format = {block.format}): drop text_field"))
    return out


def _oversized(spec: Any, pattern: str, max_mb: int) -> Optional[str]:
    for f in expand(spec, pattern)[0]:
        try:
            size = f.stat().st_size
        except OSError:
            continue
        if size > max_mb * 2**20:
            shown = shown_path(f, spec.base_dir)
            return f"{shown} is {size / 2**20:.1f} MiB, over the corpus limit of {max_mb} MiB"
    return None


def _reads(spec: Any, block: Any) -> list:
    files: list = []
    for pattern in block.paths:
        files += expand(spec, pattern)[0]
    return files


@declare("corpus", backend=("haystack", "sdk.backends.rag.haystack:HaystackBackend", "pip install 'domain-dsl[rag]'"),
         outputs=("chunks",), check=_check, reads=_reads, facets=content_facets)
class CorpusBlock(Block):
    """Domain documents, ingested, cleaned, deduplicated and chunked."""

    paths: list[str] = Field(min_length=1, description="Glob patterns relative to the recipe")
    format: Literal["auto", "text", "markdown", "jsonl", "html", "pdf"] = Field(
        default="auto", description="File format; auto goes by extension"
    )
    text_field: str = Field(default="text", description="Field holding the text in JSONL files")
    split: Split = Field(default_factory=Split, description="Chunking")
    dedupe: Literal["none", "exact", "near"] = Field(default="exact", description="Duplicate removal")
    near_threshold: Fraction = Field(default=0.85, description="Jaccard similarity of word 5-gram shingles above which two chunks are near-duplicates")
    clean: bool = Field(default=True, description="Collapse whitespace, drop empty lines and boilerplate")
    min_chars: Count = Field(default=20, description="Drop chunks shorter than this")
    max_file_mb: Count = Field(default=64, ge=1, description="Largest file read, in MiB (bounds memory: chunking takes about 6x a file's size)")
    backend: Optional[str] = Field(default=None, description="Backend name (default: haystack)")

    @model_validator(mode="after")
    def _threshold_of_near(self) -> "CorpusBlock":
        if self.dedupe != "near" and self.near_threshold != type(self).model_fields["near_threshold"].default:
            raise PydanticCustomError("incompatible", "near_threshold applies to dedupe = near (dedupe = {dedupe} "
                                      "compares no similarity): drop near_threshold, or set dedupe = near",
                                      {"dedupe": self.dedupe})
        return self
