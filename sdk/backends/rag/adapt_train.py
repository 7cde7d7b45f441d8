"""Training the adapted retrieval parts with sentence-transformers' own trainers (no training loop of ours).

* :func:`train_embedder`: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (optionally inside
  ``MatryoshkaLoss``) on (question, gold chunk, hard negative) triplets, the negatives mined from the base
  embedder by ``sentence_transformers.util.mine_hard_negatives`` with a margin below the gold chunk's score, and
  ``BatchSamplers.NO_DUPLICATES`` so that no text is twice in a batch (a duplicate would be a false in-batch
  negative).
* :func:`train_reranker`: ``CrossEncoderTrainer`` with ``BinaryCrossEntropyLoss`` on the gold chunk and mined
  negatives, the cross-encoder initialised from the packaged MiniLM weights with a fresh one-logit head (nothing
  is downloaded).

The mining corpus holds only chunks of training documents: no chunk of a dev or test document is trained on.
torch, datasets and sentence-transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sdk.backends.rag.adapt_pairs import ChunkIndex, Pair


def _quiet() -> contextlib.ExitStack:
    """Silence the trainers' progress bars, their hub/model-card chatter and the fresh-head warning."""
    stack = contextlib.ExitStack()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("sentence_transformers", "transformers", "datasets"):
        logger = logging.getLogger(name)
        old = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, old)
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the trainer prints its final figures
    return stack


def _args(cls: Any, adapt: Any, out: str, n_rows: int, **extra: Any) -> Any:
    return cls(output_dir=out, num_train_epochs=adapt.epochs, per_device_train_batch_size=min(adapt.batch_size, n_rows),
               learning_rate=adapt.learning_rate, warmup_ratio=0.1, seed=adapt.seed, data_seed=adapt.seed,
               save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True, use_cpu=True,
               dataloader_num_workers=0, **extra)


def _texts(pairs: list[Pair], index: ChunkIndex) -> dict[str, list[str]]:
    return {"anchor": [p.question for p in pairs], "positive": [index.by_id[p.gold[0]]["content"] for p in pairs]}


def mine(model: Any, pairs: list[Pair], index: ChunkIndex, corpus: list[str], adapt: Any, negatives: int,
         output_format: str) -> Any:
    """Hard negatives for the training pairs from ``model`` over ``corpus`` (training-document chunks): the top
    candidates scoring at least ``adapt.margin`` below the gold chunk (so unlabelled true answers, which score
    about as high, are not punished)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    data = Dataset.from_dict(_texts(pairs, index))
    if negatives <= 0 or len(corpus) < 3:
        return data if output_format == "triplet" else None
    with _quiet():
        return mine_hard_negatives(data, model, corpus=corpus, range_min=0, range_max=min(50, len(corpus)),
                                   absolute_margin=adapt.margin, num_negatives=negatives, sampling_strategy="top",
                                   output_format=output_format, batch_size=64, use_faiss=False, verbose=False)


def train_embedder(base: str, pairs: list[Pair], index: ChunkIndex, corpus: list[str], adapt: Any,
                   out: Path) -> dict[str, Any]:
    """Fine-tune the embedder folder ``base`` on the training pairs into ``out``; returns its training figures."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    started = time.time()
    model = SentenceTransformer(base, device="cpu", local_files_only=True)
    data = mine(model, pairs, index, corpus, adapt, adapt.hard_negatives, "triplet")
    loss: Any = MultipleNegativesRankingLoss(model)
    if adapt.matryoshka:
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=list(adapt.matryoshka))
    with tempfile.TemporaryDirectory(prefix="dsl-adapt-") as tmp, _quiet():
        args = _args(SentenceTransformerTrainingArguments, adapt, tmp, len(data),
                     batch_sampler=BatchSamplers.NO_DUPLICATES)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
        result = trainer.train()
    model.save(str(out))
    return {"rows": len(data), "with_negatives": "negative" in data.column_names,
            "loss": round(float(result.training_loss), 4), "steps": int(result.global_step),
            "seconds": round(time.time() - started, 1)}


def train_reranker(base: str, miner: Any, pairs: list[Pair], index: ChunkIndex, corpus: list[str], adapt: Any,
                   out: Path) -> dict[str, Any]:
    """Train a cross-encoder (``base``'s transformer with a fresh one-logit head) on the gold chunks and hard
    negatives mined by ``miner`` (the first stage's embedder); saved into ``out``."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    started = time.time()
    negatives = max(adapt.hard_negatives, 3)
    data = mine(miner, pairs, index, corpus, adapt, negatives, "labeled-pair")
    if data is None:  # too small a corpus to mine from: positives and shuffled chunks as negatives
        texts = _texts(pairs, index)
        shifted = texts["positive"][1:] + texts["positive"][:1]
        data = Dataset.from_dict({"query": texts["anchor"] * 2, "passage": texts["positive"] + shifted,
                                  "label": [1.0] * len(pairs) + [0.0] * len(pairs)})
    data = data.rename_columns({c: n for c, n in zip(data.column_names, ("query", "passage", "label"))})
    data = data.cast_column("label", __import__("datasets").Value("float32"))
    with _quiet():
        model = CrossEncoder(base, num_labels=1, max_length=256, device="cpu", local_files_only=True)
        ratio = max(1.0, (len(data) - sum(data["label"])) / max(1.0, sum(data["label"])))
        import torch

        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(ratio))
    with tempfile.TemporaryDirectory(prefix="dsl-adapt-") as tmp, _quiet():
        args = _args(CrossEncoderTrainingArguments, adapt, tmp, len(data))
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data.shuffle(seed=adapt.seed), loss=loss)
        result = trainer.train()
    model.save_pretrained(str(out))
    return {"rows": len(data), "loss": round(float(result.training_loss), 4), "steps": int(result.global_step),
            "seconds": round(time.time() - started, 1)}
