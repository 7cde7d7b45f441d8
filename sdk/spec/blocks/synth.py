"""``synth LABEL { task = qa  corpus = corpus.X  teacher = endpoint { ... } }``: training rows or candidate eval
items generated from the domain's own corpus by a teacher model, filtered (duplicates, contamination with the
recipe's eval sets, unsupported answers) and reviewed by experts, every dropped row accounted for in a ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk import grades as G
from sdk.hashing import digest
from sdk.spec.kinds import Dep, content_facets, declare
from sdk.spec.objects import Endpoint
from sdk.spec.paths import named_files, shown_path
from sdk.spec.values import (
    Block,
    Fraction,
    PositiveInt,
    Problem,
    TextOrFile,
    off_default,
    ref_of,
    refuse_unread,
)

TASKS = ("qa", "raft", "preference", "eval")
TRAINING_TASKS = {"finetune": ("qa", "raft"), "align": ("preference",)}


class JudgeTrust(Block):
    """``judge_agreement = { required = false }``: the filter's judge used without expert calibration. The
    threshold itself (kappa, min_items) is the calibrating eval's ``judge_agreement``: one source."""

    required: bool = Field(default=True, description="false: trust the judge without expert calibration")


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
    judge: Endpoint | None = Field(default=None, description="LLM judge endpoint that grades each row 1-5 (mapped "
                                   "to 0-1); trusted only as far as it agrees with the experts in an eval with human "
                                   "grading and the same judge")
    judge_min: Fraction | None = Field(default=None, description="Drop rows the judge scores under this (0-1; "
                                       "default 0.5, a 3 of 5)")
    rubric: TextOrFile | None = Field(default=None, description="Rubric for the judge (default: the built-in one)")
    judge_agreement: JudgeTrust | None = Field(default=None, description="{ required = false }: use the judge "
                                               "without expert calibration")

    @model_validator(mode="after")
    def _judge_options(self) -> SynthFilters:
        if self.judge is None:
            refuse_unread(off_default(self, ("judge_min", "rubric", "judge_agreement")), "{names} {verb} only with "
                          "judge = endpoint { ... }: add the judge, or drop {names}")
        return self


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


def judge_problems(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    """A judge that drops rows is trusted only as far as it agrees with the experts (the eval gate's rule): an eval
    with human grading must use the same judge (url and model), and, when the plan can read them, its grades must
    hold the answers its ``judge_agreement`` asks for. The agreement itself is checked when the step runs."""
    judge, trust = block.filters.judge, block.filters.judge_agreement
    if judge is None or (trust is not None and not trust.required):
        return []
    at = ("synth", label, "filters", "judge")
    why = f"the judge {judge.model} drops rows, and a judge is trusted only as far as it agrees with the experts"
    ev = G.calibrating_eval(spec, judge)
    if ev is None:
        return [Problem(path=at, message=f"{why}: no eval with human grading uses it (same url and model)",
                        hint="add an eval with the judge metric, this judge and human = { mode = pass_fail }, apply "
                             "it and grade its answers in dsl ui; or write judge_agreement = { required = false } "
                             "in filters")]
    kappa, need, required = G.judge_rule(spec.eval[ev])
    if not required or not check_files:
        return []
    try:
        graded, path = G.expert_graded(spec.base_dir, spec.name, ev)
    except G.DataError as e:
        return [Problem(path=at, message=str(e))]
    if graded >= need:
        return []
    have = G.too_few_grades(graded, shown_path(path, spec.base_dir))
    return [Problem(path=at, message=f"{why} (kappa >= {kappa} on >= {need} answers both graded, as eval.{ev}'s "
                    f"judge_agreement asks); {have}", hint=f"grade at least {need} answers of eval.{ev} in the Grade "
                    "view of dsl ui, or write judge_agreement = { required = false } in filters")]


def _implicit(spec: Any, label: str, block: Any) -> list[Dep]:
    """Training rows are checked for contamination against every eval's items, those an eval reads from a synth step
    of task eval too (its accepted candidates): such steps are inputs. A step of task eval checks only eval set
    files (two of them never wait for each other)."""
    if block.task == "eval" or not block.filters.contamination:
        return []
    refs = {str(ev.data) for ev in spec.eval.values() if not isinstance(ev.data, str)}
    return [(ref, ("rows",)) for ref in sorted(refs) if ref != f"synth.{label}"]


def _facets(manifest: dict[str, Any]) -> dict[str, Any]:
    """Everything it wrote (``content``), and ``rows``: the final rows alone, what an eval reads of a synth step of
    task eval (a decision that changes no kept row changes no ``rows``)."""
    rows = (manifest.get("outputs") or {}).get("rows", "rows.jsonl")
    return {**content_facets(manifest), "rows": digest(((manifest.get("written") or {}).get(rows) or {}).get("sha256"))}


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    return judge_problems(spec, label, block, check_files)


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
         reads=_reads, check=_check, plan_check=_plan_check, implicit=_implicit, facets=_facets,
         extra={"config": _config})
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
