"""How any step finds and loads a model produced by a model step.

Every model step (base_model, pretrain, finetune) records in its manifest ``outputs``:

- ``model``: a folder inside the artifact (relative), an absolute local folder, or a hub id
  (``model_source`` says which: ``artifact`` | ``local`` | ``hub`` | ``scratch``);
- ``adapter`` (optional): a PEFT adapter folder inside the artifact, applied on top of ``base``;
- ``base`` (with an adapter): the model the adapter applies to, in the same three forms;
- ``tokenizer`` (optional): a folder inside the artifact holding the tokenizer and chat template;
- ``chat_template`` (optional, base_model): a file inside the artifact holding the block's chat template.

:func:`handle` turns an artifact into absolute paths; :func:`load` loads it with transformers (lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sdk.backends.base import Artifact
from sdk.errors import DslError
from sdk.spec import FileRef


@dataclass(frozen=True)
class ModelHandle:
    model: str  # absolute folder or hub id
    adapter: Optional[str] = None  # absolute folder of a PEFT adapter
    tokenizer: Optional[str] = None  # absolute folder; default = adapter folder, else model
    revision: Optional[str] = None
    trust_remote_code: bool = False

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.adapter or self.model


def _abs(artifact: Artifact, value: Optional[str], source: str = "artifact") -> Optional[str]:
    if value is None:
        return None
    if source == "artifact":
        return str((artifact.path / value).resolve())
    return value


def recipe_trusts(spec: Any, step_id: str) -> bool:
    """Whether the *recipe* allows remote code for a model step: the base_model its ``from`` chain starts at says
    ``trust_remote_code = true``. Nothing read from a workdir (a manifest, a config.json) can turn it on."""
    seen: set[str] = set()
    while step_id and step_id not in seen:
        seen.add(step_id)
        kind, _, label = step_id.partition(".")
        block = getattr(spec, kind, {}).get(label) if kind else None
        if block is None:
            return False
        if kind == "base_model":
            return bool(block.trust_remote_code)
        step_id = str(getattr(block, "from_", "") or "")
    return False


def handle(artifact: Artifact, trust_remote_code: bool = False) -> ModelHandle:
    """Absolute paths of a model artifact. ``trust_remote_code`` comes from the caller (see :func:`recipe_trusts`),
    never from the artifact."""
    out = artifact.outputs
    if out.get("model_source") == "scratch":
        raise DslError(f"{artifact.step_id} is an architecture with no weights yet: pretrain it first")
    if "adapter" in out:
        return ModelHandle(
            model=_abs(artifact, out["base"], out.get("base_source", "local")) or "",
            adapter=_abs(artifact, out["adapter"]),
            tokenizer=_abs(artifact, out.get("tokenizer")),
            revision=out.get("revision"),
            trust_remote_code=trust_remote_code,
        )
    return ModelHandle(
        model=_abs(artifact, out["model"], out.get("model_source", "artifact")) or "",
        tokenizer=_abs(artifact, out.get("tokenizer")),
        revision=out.get("revision"),
        trust_remote_code=trust_remote_code,
    )


def quiet_library_deprecations() -> None:
    """PEFT and TRL still read transformers 5's deprecated ``is_gradient_checkpointing``: a warning the user can do
    nothing about (our own arguments use the new name), so it is not shown."""
    import warnings

    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def sized_to_its_weights(model: str) -> None:
    """Refuse (a DslError naming the folder) a local model folder whose config.json declares a model far larger
    than its weight files hold (``num_hidden_layers = 1000000`` beside a small checkpoint): transformers would
    initialise every missing layer and take all the memory there is; and one whose weights are pickles only
    (``pytorch_model.bin``, ``.pt``), which are never loaded. A hub id, or a folder without weights, passes."""
    import json
    from pathlib import Path

    folder = Path(model)
    weights = [f for f in folder.glob("*") if f.suffix == ".safetensors" or (  # not training_args.bin, optimizer.pt
        f.suffix in (".bin", ".pt", ".pth") and f.name.startswith(("pytorch_model", "model")))] if folder.is_dir() else []
    if weights and not any(f.suffix == ".safetensors" for f in weights):
        raise DslError(f"{folder} holds its weights only as pickles ({', '.join(sorted(f.name for f in weights))}): "
                       "dsl never loads a pickle (it can run code); convert them to safetensors")
    if not weights or not (folder / "config.json").is_file():
        return
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = config.get("text_config", config) if isinstance(config, dict) else {}
    except (OSError, ValueError, RecursionError):
        raise DslError(f"{folder / 'config.json'} is not a readable JSON configuration") from None

    def first(*names: str) -> int:
        value = next((config[n] for n in names if isinstance(config.get(n), (int, float))), 0)
        return int(value) if value == value and abs(value) < 1e18 else 1 << 62  # nan, inf, 1e300: absurd too

    layers, hidden = first("num_hidden_layers", "n_layer", "num_layers"), first("hidden_size", "n_embd", "d_model")
    declared = layers * 12 * hidden * hidden + first("vocab_size") * hidden  # parameters, roughly
    held = sum(f.stat().st_size for f in weights)
    if declared > 8 * held + 100_000_000:  # 4-bit weights hold 2 parameters a byte: 8x leaves room for any
        raise DslError(f"{folder / 'config.json'} declares a model of about {declared:.2g} parameters "
                       f"({layers:,} layers of {hidden:,}), but its weights hold {held:,} bytes: the configuration "
                       "does not belong to these weights (damaged, or made to exhaust memory); it is not loaded")


def load(h: ModelHandle, *, quantize_4bit: bool = False, merge: bool = False, dtype: str = "auto") -> tuple[Any, Any]:
    """Load (model, tokenizer) with transformers, applying the adapter if there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sized_to_its_weights(h.model)

    kwargs: dict[str, Any] = {"revision": h.revision, "trust_remote_code": h.trust_remote_code}
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(h.tokenizer_path)
    except (RecursionError, ValueError) as e:  # a tokenizer.json nested thousands deep, or damaged
        raise DslError(f"the tokenizer in {h.tokenizer_path} cannot be loaded ({type(e).__name__}: "
                       f"{str(e)[:200]})") from None
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a bad tokenizer.json
        if type(e) is not Exception:
            raise
        raise DslError(f"the tokenizer in {h.tokenizer_path} cannot be loaded ({str(e)[:200]})") from None
    model = AutoModelForCausalLM.from_pretrained(h.model, **kwargs)
    if h.adapter:
        from peft import PeftModel

        quiet_library_deprecations()
        model = PeftModel.from_pretrained(model, h.adapter)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer


TEMPLATE_FILE = "chat_template.jinja"


def recipe_template(spec: Any, block: Any) -> Optional[str]:
    """The chat template a block itself gives (text, or the content of its file()), or None."""
    value = getattr(block, "chat_template", None)
    if value is None:
        return None
    return value.read(spec.base_dir) if isinstance(value, FileRef) else str(value)


def recorded_template(artifact: Artifact) -> Optional[str]:
    """The chat template a model step recorded in its artifact (``outputs["chat_template"]``), or None."""
    name = artifact.outputs.get("chat_template")
    return (artifact.path / name).read_text(encoding="utf-8") if name else None
