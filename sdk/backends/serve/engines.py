"""Serving engines, one class each, registered once: what the serve step plans for an engine at apply time.

``local`` is the embedded CPU engine (transformers, batched; nothing to plan). ``sglang`` plans one SGLang server:
its launch command, with every adapter on the base model most of them share; ``dsl serve`` starts it
(:mod:`sdk.serving.sglang`). A new engine is one class here plus its name in the serve block's ``engine``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional


class Engine:
    name = ""

    def plan(self, variants: dict[str, Any], hubs: dict[str, str], block: Any) -> tuple[Optional[dict[str, Any]], list[str]]:
        """The engine's part of serve.json (or None) and notes for the summary; may mark variants it serves."""
        return None, []


class LocalEngine(Engine):
    name = "local"


class SGLangEngine(Engine):
    name = "sglang"

    def plan(self, variants: dict[str, Any], hubs: dict[str, str], block: Any) -> tuple[Optional[dict[str, Any]], list[str]]:
        return sglang_plan(variants, hubs, block)


ENGINES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    if cls.name in ENGINES:
        raise ValueError(f"engine {cls.name!r} is already registered")
    ENGINES[cls.name] = cls
    return cls


for _cls in (LocalEngine, SGLangEngine):
    register(_cls)


def launch_command(base: str, adapters: dict[str, str], options: dict[str, Any], port: int,
                   host: str = "127.0.0.1") -> list[str]:
    """``python -m sglang.launch_server --model-path BASE --enable-lora --lora-paths name=path ...``"""
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", base, "--host", host, "--port", str(port),
           "--tp", str(options.get("tp", 1)), "--dp", str(options.get("dp", 1))]
    if adapters:
        cmd += ["--enable-lora", "--lora-paths"] + [f"{name}={path}" for name, path in sorted(adapters.items())]
        cmd += ["--max-loras-per-batch", str(options.get("max_loras_per_batch", 4))]
    if options.get("chat_template"):  # the template the model was trained with, verbatim (not SGLang's guess)
        cmd += ["--chat-template", str(options["chat_template"])]
    if options.get("mem_fraction") is not None:
        cmd += ["--mem-fraction-static", str(options["mem_fraction"])]
    return cmd + list(options.get("extra_args", []))


def model_name(base: str, adapter: Optional[str]) -> str:
    """SGLang addresses a LoRA adapter as ``base:adapter`` in the request's model field."""
    return f"{base}:{adapter}" if adapter else base


def sglang_plan(variants: dict[str, Any], hubs: dict[str, str], block: Any) -> tuple[dict[str, Any], list[str]]:
    """One SGLang server: the base model most adapters apply to, with every adapter on it as ``--lora-paths
    NAME=PATH``. Each variant it serves gets ``sglang_model`` (``base`` or ``base:NAME``, SGLang's naming); the
    others stay on the local engine, and a note says so."""
    models = {k: v for k, v in variants.items() if v.get("type") == "model"}
    bases = Counter(v["model"] for v in models.values() if v.get("adapter"))
    base = bases.most_common(1)[0][0] if bases else next(iter(hubs.values()), None) or \
        next((v["model"] for v in models.values()), None)
    notes: list[str] = []
    adapters: dict[str, str] = {}
    if base is None:
        return {"base": None, "adapters": {}, "port": block.engine_port, "command": None}, \
            ["sglang: no model to serve (only rag systems and endpoints)"]
    template: Optional[str] = None  # the chat template the served models were trained with, passed verbatim
    for name, v in models.items():
        if v["model"] != base:
            notes.append(f"sglang: {name} is not on {base}, so the local engine serves it")
            continue
        own = chat_template_file(v)
        if own is not None:
            if template is None:
                template = own
            elif Path(own).read_text(encoding="utf-8") != Path(template).read_text(encoding="utf-8"):
                notes.append(f"sglang: {name} was trained with another chat template, so the local engine serves it")
                continue
        if v.get("adapter"):
            adapter = name.split(".", 1)[1]
            adapters[adapter] = v["adapter"]
            v["sglang_model"] = model_name(base, adapter)
        else:
            v["sglang_model"] = base
    for name, hub in hubs.items():
        if hub == base:
            variants[name] = {"type": "model", "model": hub, "adapter": None, "tokenizer": None, "sglang_model": base}
    options = block.sglang.model_dump()
    if template is not None:
        options["chat_template"] = template
    command = launch_command(base, adapters, options, block.engine_port)
    return {"base": base, "adapters": adapters, "port": block.engine_port, "command": command,
            "chat_template": template}, notes


def chat_template_file(variant: dict[str, Any]) -> Optional[str]:
    """The chat template file saved with a model variant's tokenizer (adapter folder first), if any."""
    for folder in (variant.get("tokenizer"), variant.get("adapter"), variant.get("model")):
        if folder and (Path(folder) / "chat_template.jinja").is_file():
            return str(Path(folder) / "chat_template.jinja")
    return None
