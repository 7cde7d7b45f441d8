"""``synth LABEL { task = qa  corpus = corpus.X  teacher = endpoint { ... } }``: training rows or candidate eval
items generated from the domain's own corpus by a teacher model, filtered (duplicates, contamination with the
recipe's eval sets, unsupported answers) and reviewed by experts, every dropped row accounted for in a ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.kinds import content_facets, declare
from sdk.spec.objects import Endpoint
from sdk.spec.paths import named_files
from sdk.spec.values import Block, Fraction, PositiveInt, Problem, TextOrFile, ref_of

TASKS = ("qa", "raft", "preference", "eval")
TRAINING_TASKS = {"finetune": ("qa", "raft"), "align": ("preference",)}


class SynthFilters(Block):
    """What is dropped after generation, each drop recorded in the ledger with its reason."""

    dedupe: Literal["none", "exact", "near"] = Field(default="near", description="Drop exact duplicates (exact) or "
                                                     "near duplicates too (near: MinHash over word shingles)")
    near_threshold: Fraction = Field(default=0.85, description="Estimated Jaccard similarity from which two rows "
                                                               "are near duplicates")
    contamination: bool = Field(default=True, description="Drop rows that share a 13-gram or are near duplicates "
                                                          "of an item of any eval set of the recipe")
    supported: bool = Field(default=True, description="Drop answers not supported by their chunk")
    support_threshold: Fraction = Field(default=0.5, description="Share of the answer's content words its chunk "
                                                                  "must hold for the answer to count as supported")
    ngram: int = Field(default=13, ge=3, le=50, description="Word n-gram length of the contamination overlap")
    min_chars: int = Field(default=1, ge=0, le=1_000_000, description="Shortest question and answer kept")
    max_chars: PositiveInt = Field(default=4000, description="Longest question or answer kept")


class Price(Block):
    """What the teacher costs, in a currency of your choice per million tokens."""

    input: float = Field(ge=0, le=1_000_000, description="Price of a million prompt tokens")
    output: float = Field(ge=0, le=1_000_000, description="Price of a million completion tokens")


def decisions_file(spec: Any, label: str) -> Path:
    """Where the experts' review decisions for synth step ``label`` live: beside the recipe (an input, not cache)."""
    return spec.base_dir / "reviews" / spec.name / f"{label}.jsonl"


def _reads(spec: Any, block: Any) -> list[Path]:
    """The prompt files, the eval sets (contamination filter), and the review decisions once some exist (a changed
    decision re-runs the step, from the journal: no teacher call is repeated)."""
    label = next((name for name, b in spec.synth.items() if b is block), None)
    paths = named_files(spec, block)
    if block.filters.contamination:
        paths += [spec.base_dir / ev.data for ev in spec.eval.values() if isinstance(ev.data, str)]
    if label is not None and (decisions := decisions_file(spec, label)).is_file():
        paths.append(decisions)
    return paths


def _plan_check(spec: Any, label: str, block: Any) -> list[Problem]:
    """A rag system retrieves from its own corpus: raft distractors come from the chunks it indexes."""
    out: list[Problem] = []
    if block.rag is not None and spec.has(block.rag) and spec.get(block.rag).corpus != block.corpus:
        out.append(Problem(path=("synth", label, "rag"), message=f"{block.rag} indexes {spec.get(block.rag).corpus}, "
                           f"not {block.corpus}: its retrieval cannot return this step's golden chunks",
                           hint=f"use a rag system over {block.corpus}"))
    return out


def training_problems(spec: Any, kind: str, label: str, attr: str) -> list[Problem]:
    """A finetune or align that names a synth step of the wrong task: eval candidates never train."""
    block = getattr(spec, kind)[label]
    ref = getattr(block, attr, None)
    if ref is None or getattr(ref, "kind", None) != "synth" or not spec.has(ref):
        return []
    task = spec.get(ref).task
    if task == "eval":
        return [Problem(path=(kind, label, attr), message=f"{ref} makes candidate eval items (task = eval): eval "
                        "candidates are never used for training", hint="name a synth step of task qa or raft "
                        "(finetune) or preference (align)")]
    if task not in TRAINING_TASKS[kind]:
        return [Problem(path=(kind, label, attr), message=f"{ref} makes {task} rows, and {kind} reads "
                        f"{' or '.join(TRAINING_TASKS[kind])} rows", hint=f"set task = {TRAINING_TASKS[kind][0]} "
                        f"in {ref}")]
    return []


def _config(spec: Any, block: Any) -> dict[str, Any]:
    """The fingerprinted configuration: everything but ``concurrency`` (how fast the replies come, not which)."""
    config = block.model_dump(mode="json", by_alias=True)
    config.pop("concurrency", None)
    return config


@declare("synth", backend=("teacher", "sdk.backends.data.synth:SynthBackend"), outputs=("rows",),
         reads=_reads, plan_check=_plan_check, facets=content_facets, extra={"config": _config})
class SynthBlock(Block):
    """Rows generated from a corpus by a teacher model, filtered and reviewed, with a ledger of every dropped row."""

    task: Literal[TASKS] = Field(default="qa", description="qa, raft, preference or eval")  # type: ignore[valid-type]
    corpus: ref_of("corpus") = Field(description="Corpus whose chunks the rows are grounded in")  # type: ignore[valid-type]
    teacher: ref_of("@model") | Endpoint = Field(  # type: ignore[valid-type]
        description="Model step or OpenAI-compatible endpoint { ... } that writes questions and answers")
    rows: PositiveInt = Field(default=100, le=1_000_000, description="Most rows generated (one chunk each)")
    concurrency: int = Field(default=8, ge=1, le=256, description="Teacher requests in flight at once")
    budget_tokens: PositiveInt | None = Field(default=None, description="Stop cleanly once the teacher has used "
                                                                          "this many tokens (prompt + completion)")
    max_tokens: PositiveInt = Field(default=512, le=65_536, description="Longest teacher reply, in tokens")
    prompt: TextOrFile | None = Field(default=None, description="Jinja2 template of the question request "
                                         "(variables: chunk, source, task); default: the built-in one")
    answer_prompt: TextOrFile | None = Field(default=None, description="raft: Jinja2 template of the answer "
                                                "request (variables: question, chunk, source, cite: the golden "
                                                "chunk's number among the row's chunks)")
    rag: ref_of("rag") | None = Field(default=None,  # type: ignore[valid-type]
                                         description="raft: rag system whose retrieval gives the distractors")
    distractors: int = Field(default=3, ge=0, le=50, description="raft: distractor chunks per row")
    no_golden_share: Fraction = Field(default=0.2, description="raft: share of rows whose chunks leave the golden "
                                                               "one out")
    student: ref_of("@model") | None = Field(  # type: ignore[valid-type]
        default=None, description="preference: model step that writes the rejected answer (default: a corrupted "
                                  "teacher answer)")
    filters: SynthFilters = Field(default_factory=SynthFilters, description="Filters applied after generation")
    review: Literal["none", "optional", "required"] = Field(
        default="none", description="Expert review: none, optional (rejected rows dropped, edits applied) or "
                                    "required (only accepted or edited rows are kept)")
    price: Price | None = Field(default=None, description="Teacher prices per million tokens, for the cost in "
                                                             "the manifest")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the chunk order and the raft shuffles")
    backend: str | None = Field(default=None, description="Backend name (default: teacher)")

    @model_validator(mode="after")
    def _task_attributes(self) -> SynthBlock:
        if self.task == "raft" and self.rag is None:
            raise PydanticCustomError("incompatible", "task = raft draws its distractors from a rag system's "
                                      "retrieval: set rag = rag.X (a rag system over the same corpus)", {})
        only = {"rag": "raft", "distractors": "raft", "no_golden_share": "raft", "answer_prompt": "raft",
                "student": "preference"}
        for name, task in only.items():
            if name in self.model_fields_set and self.task != task:
                raise PydanticCustomError("incompatible", "{name} applies to task = {task}, not {this}; drop it",
                                          {"name": name, "task": task, "this": self.task})
        return self
