"""Plan-time checks of the model a training step starts from (issue 23): a LoRA ``target_modules`` entry that names
no module of the model fails in PEFT only once the model is loaded, after every step before it has run.

The model's module names are known without loading it: an ``architecture = llama { ... }`` builds a Llama (its
projections are fixed), and a local model folder lists its weights in the safetensors header (the first bytes of
``model.safetensors``, or ``model.safetensors.index.json``), read here without torch. A hub model, or a folder
with other weight files, is left to PEFT. PEFT matches a name when a module's dotted name equals it or ends with
``.NAME``; the same rule is applied here."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Optional

from sdk.spec.values import Problem
from sdk.spec.weights import from_chain

LLAMA = ("model.embed_tokens", "lm_head", *(f"model.layers.0.{m}" for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj", "input_layernorm", "post_attention_layernorm")), "model.norm")
HEADER_MAX = 100 * 2**20  # a safetensors header larger than this is not read


def _weight_names(folder: Path) -> Optional[list[str]]:
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
        single = folder / "model.safetensors"
        if single.is_file():
            with open(single, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if size > HEADER_MAX:
                    return None
                return [k for k in json.loads(f.read(size)) if k != "__metadata__"]
    except (OSError, ValueError, struct.error):
        return None
    return None


def module_names(spec: Any, block: Any) -> Optional[list[str]]:
    """The dotted module names of the model the step ``block`` starts from (following ``from`` back to its base
    model), or None when they cannot be known without loading it."""
    for ref, model in from_chain(spec, block):
        if ref is not None and ref.kind == "base_model":
            if model.architecture is not None:
                return list(LLAMA)
            if model.path:
                names = _weight_names(spec.resolve_path(model.path))
                # lm_head: tied to the embeddings, it is often not saved, but the model has it
                return sorted({n.rsplit(".", 1)[0] for n in names} | {"lm_head"}) if names else None
            return None
    return None


def lora_problems(spec: Any, kind: str, label: str, block: Any) -> list[Problem]:
    """``lora = { target_modules = [...] }`` entries that name no module of the model the step tunes."""
    lora = getattr(block, "lora", None)
    targets = getattr(lora, "target_modules", "all_linear")
    if lora is None or targets == "all_linear":
        return []
    if kind == "align" and getattr(block, "method", None) == "dpo" and "lm_head" in targets:
        return [Problem(path=(kind, label, "lora", "target_modules"), message="target_modules names lm_head, and TRL's "
                        "DPO trainer refuses an adapter on lm_head when training starts (it reads lm_head.weight "
                        "directly, so the adapter would never train)", hint="drop \"lm_head\" from target_modules")]
    names = module_names(spec, block)
    if not names:
        return []
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not missing:
        return []
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
    return [Problem(path=(kind, label, "lora", "target_modules"),
                    message=f"target_modules {', '.join(repr(m) for m in missing)} name no module of the model "
                            f"{block.from_} starts from (PEFT would fail once it is loaded)",
                    hint=f"its modules: {', '.join(leaves[:20])}; or target_modules = all_linear")]


RENDERED = 20_000  # rows whose conversations the plan renders with the chat template (the first ones)


def _tokens(spec: Any, block: Any) -> dict[str, str]:
    """The special tokens a template is rendered with: a local base model's (its tokenizer_config.json), else
    stand-ins (a template's role checks do not depend on them)."""
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    for _, step in from_chain(spec, block):
        if getattr(step, "path", None):
            try:
                config = json.loads((spec.resolve_path(step.path) / "tokenizer_config.json").read_text("utf-8"))
            except (OSError, ValueError):
                return tokens
            return {**tokens, **{k: v for k, v in config.items() if k in tokens and isinstance(v, str)}}
    return tokens


def chat_row_problems(spec: Any, kind: str, label: str, block: Any, rows: list[dict[str, Any]], source: str,
                      at: tuple[Any, ...]) -> list[Problem]:
    """Every conversation the trainer will render from ``rows`` (the first :data:`RENDERED`), rendered at plan
    time with the chat template the step trains with, where it is known (its own ``chat_template``, or the nearest
    one up its ``from`` chain): a template that refuses a row (``raise_exception('Conversation roles must
    alternate ...')``: an assistant turn first, two user turns in a row, a system turn last) is a ``FILE:LINE``
    plan error, by the function the step itself renders with (:func:`~sdk.backends.training.tuning.check_chat_rows`),
    not an error after the steps before it have trained."""
    from types import SimpleNamespace

    from sdk.backends.training.tuning import check_chat_rows
    from sdk.errors import DslError
    from sdk.spec.templates import training_template

    template = training_template(spec, block)
    if not template or not rows:
        return []
    tokenizer = SimpleNamespace(chat_template=template, special_tokens_map=_tokens(spec, block))
    try:
        check_chat_rows(tokenizer, rows[:RENDERED], f"{kind}.{label}", source)
    except DslError as e:
        return [Problem(path=at, message=str(e))]
    return []
