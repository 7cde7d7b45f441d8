"""Objects used inside blocks: ``endpoint {}``, ``llama {}``, ``memory {}``, ``index {}``, ``pgvector {}``,
``split``, ``lora``, the training settings every trainer shares, eval field maps and launch options."""

from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec.values import MAX_INT, Block, Count, Fraction, PositiveInt, Secret, Seed


class Endpoint(Block):
    """An OpenAI-compatible endpoint: ``endpoint { url = "...", model = "...", api_key = env("KEY") }``."""

    type: Literal["endpoint"] = "endpoint"
    url: str = Field(description="Base URL of the OpenAI-compatible API, e.g. https://api.example.com/v1")
    model: str = Field(description="Model name sent in each request")
    api_key: Optional[Secret] = Field(default=None, description='Key, always as env("NAME")')
    timeout: float = Field(default=30.0, gt=0, le=86_400, description="Seconds before one request gives up (at most a day)")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries with exponential backoff")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return http_url(v)


def http_url(v: str) -> str:
    """An http(s) URL with a host, and no password in it (a key is given as ``api_key = env("NAME")``): checked
    when the recipe is read, not when the first request fails after training."""
    from urllib.parse import urlsplit

    parts = urlsplit(v) if v.isprintable() and not any(c.isspace() for c in v) else None
    try:
        host = parts.hostname if parts is not None else None
        parts.port if parts is not None else None  # noqa: B018 - a port that is not a number raises
    except ValueError:
        host = None
    if parts is not None and parts.password is not None:
        raise PydanticCustomError("url", "the url holds a password; give the key as api_key = env(\"NAME\") "
                                  "instead", {})
    if parts is None or parts.scheme not in ("http", "https") or not host:
        hint = f"http://{v}" if parts is not None and "://" not in v and v else "http://127.0.0.1:8000/v1"
        raise PydanticCustomError("url", "url {value} is not an http(s) URL with a host (e.g. {hint})",
                                  {"value": repr(v)[:80], "hint": hint})
    return v


HOST = re.compile(r"^(\[[0-9A-Fa-f:.%]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+(%\w+)?|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)$")


def host_name(v: str) -> str:
    """A host name or an IP address, as a socket binds or connects to it: no scheme, path or port."""
    if not HOST.match(v):
        bare = v.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0] if "://" in v or "/" in v or v.count(":") == 1 else None
        raise PydanticCustomError("host", "{value} is not a host name or IP address{more}",
                                  {"value": repr(v)[:80], "more": f" (write {bare!r}: no scheme, path or port)"
                                   if bare and HOST.match(bare) else ""})
    return v


class Llama(Block):
    """A from-scratch Llama architecture: ``llama { layers = 2, hidden = 128, heads = 4, vocab = 4000 }``."""

    type: Literal["llama"] = "llama"
    layers: int = Field(default=2, ge=1, le=128, description="Number of decoder layers")
    hidden: int = Field(default=128, ge=8, le=16384, description="Hidden size")
    heads: int = Field(default=4, ge=1, le=256, description="Attention heads")
    kv_heads: Optional[int] = Field(default=None, ge=1, le=256, description="Key/value heads (grouped-query); default = heads")
    intermediate: Optional[int] = Field(default=None, ge=8, le=MAX_INT, description="MLP size; default = 4 * hidden")
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


class IndexStore(Block):
    """A local index saved into the artifact: bm25s for keyword search (Haystack's BM25L scores) and an exact
    numpy search over the embeddings; queries stay fast at 100k chunks. ``index {}``"""

    type: Literal["index"] = "index"


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
    overlap: Count = Field(default=30, description="Units shared by consecutive chunks")

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
    seed: Seed = Field(default=42, description="Seed for data order, initialisation and dropout")
    save_steps: PositiveInt = Field(default=50, description="Checkpoint every N optimizer steps")
    logging_steps: PositiveInt = Field(default=5, description="Log loss every N steps")


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

    @model_validator(mode="after")
    def _pattern_compiles(self) -> "FieldMap":
        if self.answer_pattern is not None:
            try:
                groups = re.compile(self.answer_pattern).groups
            except re.error as e:
                raise PydanticCustomError("bad_pattern", "answer_pattern is not a regular expression: {e}",
                                          {"e": str(e)}) from None
            if groups < 1:
                raise PydanticCustomError("bad_pattern", "answer_pattern has no group: its first group (...) is the "
                                          "answer, e.g. \"option (\\d+)\"", {})
        return self


class SGLangOptions(Block):
    tp: PositiveInt = Field(default=1, description="Tensor-parallel size")
    dp: PositiveInt = Field(default=1, description="Data-parallel size")
    mem_fraction: Optional[Fraction] = Field(default=None, description="--mem-fraction-static")
    max_loras_per_batch: PositiveInt = Field(default=4, description="--max-loras-per-batch")
    extra_args: list[str] = Field(default_factory=list, description="More launch_server arguments")


class DeepSpeed(Block):
    stage: Literal[0, 1, 2, 3] = Field(default=2, description="ZeRO stage")
    offload: bool = Field(default=False, description="Offload optimizer state to CPU")


class Fsdp(Block):
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = Field(default="full_shard", description="FSDP sharding strategy")
    auto_wrap: Literal["transformer", "size"] = Field(default="transformer", description="Auto-wrap policy")
    offload: bool = Field(default=False, description="Offload parameters to CPU")
