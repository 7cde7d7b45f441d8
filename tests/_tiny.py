"""Tiny models for tests: a byte-level BPE tokenizer trained on a few KB of text and a 2-layer Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sdk.backends.training.common import SAMPLE_TEXT, make_tiny_model

__all__ = ["SAMPLE_TEXT", "make_tiny_model", "tiny_model_dir"]


def tiny_model_dir(folder: Path, text: Optional[str] = None) -> Path:
    """A cached tiny model under ``folder`` (built once)."""
    target = folder / "tiny-model"
    if not (target / "config.json").exists():
        make_tiny_model(target, text)
    return target
