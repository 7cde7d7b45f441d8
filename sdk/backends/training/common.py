"""What pretraining and fine-tuning share: seeds, tokenizer and model building, the progress callback, the loss
curve, the model card and checkpoint resume (launching a job in other processes is :mod:`sdk.backends.training.launch`).

A training *job* is a plain JSON-able dict, so the same function runs in-process or, under a launcher, in every
rank of a multi-process run: ``python -m sdk.backends.training.pretrain JOB.json`` / ``python -m sdk.backends.training.finetune JOB.json``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sdk.backends.training.launch import (  # noqa: F401 - re-exported: job modules reach them as training.X
    accelerate_config,
    distributed_args,
    is_main_process,
    launch_command,
    main,
    run_job,
    run_launched,
    run_step_job,
    world_size,
)
from sdk.errors import DslError
from sdk.events import job_logger

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# A chat template with {% generation %} markers, so TRL can put the loss on assistant tokens only. An assistant
# turn ends with <|end|> and then the tokenizer's eos (</s>): the model learns to emit eos after its answer, so
# every generation path (transformers' generate, Haystack's generator, the gateway's engine) stops there.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|></s>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def set_threads() -> None:
    """CPU training threads: DSL_THREADS, else OMP_NUM_THREADS (set by a launcher's ranks or a parallel test run),
    else 2; never more than the cores. More threads than cores make OpenMP's busy-waiting threads fight (an order of
    magnitude slower when two runs share two cores)."""
    import torch

    if not torch.cuda.is_available():
        asked = os.environ.get("DSL_THREADS") or os.environ.get("OMP_NUM_THREADS") or "2"
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, int(asked) if asked.isdigit() else 2)))


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


# ------------------------------------------------------------------------------------------ from scratch


def train_tokenizer(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers, with a chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=SPECIAL_TOKENS[4:])
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 1_000_000
    return tok


def build_model(arch: dict[str, Any], tokenizer: Any, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    seed_everything(seed)
    hidden = int(arch["hidden"])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(arch.get("intermediate") or 4 * hidden),
        num_hidden_layers=int(arch["layers"]), num_attention_heads=int(arch["heads"]),
        num_key_value_heads=int(arch.get("kv_heads") or arch["heads"]), max_position_embeddings=int(arch["context"]),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def make_tiny_model(folder: Path, text: Optional[str] = None, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                    vocab: int = 400, context: int = 128, seed: int = 0) -> Path:
    """A randomly initialised tiny Llama with a BPE tokenizer trained on ``text``, saved to ``folder``."""
    text = text or SAMPLE_TEXT
    tok = train_tokenizer([text] * 3, vocab)
    model = build_model({"layers": layers, "hidden": hidden, "heads": heads, "context": context}, tok, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


SAMPLE_TEXT = (
    "The Session Initiation Protocol (SIP) sets up, changes and ends multimedia sessions such as voice calls. "
    "A SIP INVITE request starts a call; the callee answers with 180 Ringing and 200 OK, and the caller sends ACK. "
    "The IP Multimedia Subsystem (IMS) defined by 3GPP uses SIP for signalling between the P-CSCF, I-CSCF and "
    "S-CSCF. Media flows over RTP, described by SDP offers and answers. Yes. No. Maybe. The answer is yes. "
    "Diameter carries authentication between the HSS and the CSCF. VoLTE runs voice over LTE with IMS. "
)


# ------------------------------------------------------------------------------------------------ data


def pack(token_lists: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate token lists and cut fixed-length blocks (the remainder is dropped)."""
    flat = [t for ids in token_lists for t in ids]
    return [flat[i:i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]


def perplexity(model: Any, blocks: list[list[int]], batch_size: int = 8) -> Optional[float]:
    import torch

    if not blocks:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            ids = torch.tensor(blocks[i:i + batch_size])
            out = model(input_ids=ids, labels=ids)
            n = ids.numel() - ids.shape[0]
            total += float(out.loss) * n
            count += n
    model.train()
    return float(math.exp(min(total / max(count, 1), 50)))


# ---------------------------------------------------------------------------------------------- trainer


def check_model_exists(model: str, step_id: str, source: Any) -> None:
    """A local base model folder that vanished since planning is a clear error, not a hub lookup."""
    if (os.path.isabs(model) or model.startswith(".")) and not (Path(model) / "config.json").is_file():
        raise DslError(f"{step_id}: the base model folder {model} (from {source}) does not exist or has no "
                       "config.json; run the step that makes it, or fix the path")


_CURVE_NAMES = {"loss": "train_loss"}  # the trainer's log keys as the event log names them
_NOT_CURVES = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
               "train_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}  # train_loss: the mean


def progress_callback(progress: Any, description: str, total: int,
                      tokens: Optional[Callable[[], int]] = None) -> Any:
    """A TrainerCallback showing step, loss and throughput (steps/s, and tokens/s when ``tokens`` counts the
    tokens trained so far) in a rich progress bar; on rank 0 it also appends each logged loss (``train_loss``,
    ``eval_loss``, rewards...) to the running apply's event log (:func:`sdk.events.job_logger`)."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.ctx = progress.task(description, total=total) if progress is not None else None
            self.task: Any = None
            self.started = time.time()
            self.first = 0
            self.events = job_logger() if is_main_process() else None  # the apply's event log (sdk.events)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started, self.first = time.time(), state.global_step
            if self.ctx is not None and self.task is None:
                self.task = self.ctx.__enter__()
                self.task.update(total=state.max_steps or total, completed=state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.task is not None:
                self.task.update(completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kw: Any) -> None:
            if self.events is not None and logs:
                for name, value in logs.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in _NOT_CURVES:
                        self.events(_CURVE_NAMES.get(name, name), value, state.global_step)
            if self.task is not None and logs and "loss" in logs:
                elapsed = max(time.time() - self.started, 1e-9)
                fields: dict[str, Any] = {"loss": round(float(logs["loss"]), 4),
                                          "steps_per_s": round((state.global_step - self.first) / elapsed, 2)}
                if tokens is not None:
                    fields["tokens_per_s"] = round(tokens() / elapsed)
                self.task.update(**fields)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.ctx is not None and self.task is not None:
                self.ctx.__exit__(None, None, None)
                self.task = None

    return _Progress()


def quiet(trainer: Any) -> Any:
    """No log dicts printed to stdout (transformers adds a PrinterCallback when tqdm is off): stdout belongs to
    the CLI (``dsl apply --json``); the progress bar shows step, loss and throughput instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def train(trainer: Any, resume: Optional[str], log: Callable[[str], None]) -> tuple[Any, float]:
    """Run ``trainer`` quietly, from the checkpoint ``resume`` where there is one (said in the log): TRL's output
    and the seconds training took."""
    if resume:
        log(f"resuming from {Path(resume).name}")
    quiet(trainer)
    started = time.time()
    try:
        output = trainer.train(resume_from_checkpoint=resume)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint is named with how to discard it; the rest re-raised
        if resume and damaged_checkpoint(e):
            raise DslError(f"the checkpoint {resume} cannot be read ({type(e).__name__}: {str(e)[:200]}); discard it "
                           f"with: rm -r {resume} (training then resumes from an earlier checkpoint, or starts over) "
                           "and run dsl apply again") from None
        raise
    return output, time.time() - started


def damaged_checkpoint(e: BaseException) -> bool:
    """Whether resuming failed because a checkpoint file is unreadable (truncated, corrupt, not what it says)."""
    import json
    import pickle

    if isinstance(e, (pickle.UnpicklingError, EOFError, json.JSONDecodeError, UnicodeDecodeError)):
        return True
    marks = ("PytorchStreamReader", "zip archive", "invalid load key", "Weights only load failed", "safetensors",
             "header too", "Error while deserializing")
    return type(e).__name__ == "SafetensorError" or (
        isinstance(e, (RuntimeError, ValueError, OSError)) and any(m in str(e) for m in marks))


def latest_checkpoint(folder: Path) -> Optional[str]:
    found = []
    for p in Path(folder).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return str(max(found)[1]) if found else None


def loss_history(trainer: Any) -> list[dict[str, float]]:
    return [{"step": int(r["step"]), "loss": float(r["loss"])} for r in trainer.state.log_history if "loss" in r]


def write_model_card(folder: Path, title: str, base: str, data: dict[str, Any], params: dict[str, Any],
                     metrics: dict[str, Any]) -> None:
    rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
    mrows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    drows = "\n".join(f"- `{k}`: sha256 `{v}`" for k, v in data.items())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"""---
library_name: transformers
tags: [domain-dsl]
---
# {title}

Trained by domain-dsl.

- Base model: `{base}`

## Data
{drows or '- (none)'}

## Hyperparameters
| name | value |
|---|---|
{rows}

## Metrics
| metric | value |
|---|---|
{mrows}
""", encoding="utf-8")


def _checkpointing_arg() -> str:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def training_args(block: Any, output_dir: Path, *, has_eval: bool, distributed: Optional[dict] = None,
                  fine_tuning: bool = False) -> dict[str, Any]:
    import torch

    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": block["batch_size"],
        "per_device_eval_batch_size": block["batch_size"],
        "gradient_accumulation_steps": block["gradient_accumulation"],
        "learning_rate": block["learning_rate"],
        "weight_decay": block["weight_decay"],
        "warmup_steps": float(block.get("warmup_ratio") or 0),  # a float in [0, 1) is a ratio of all steps
        "lr_scheduler_type": block["scheduler"],
        "seed": block["seed"],
        "data_seed": block["seed"],
        "logging_steps": block["logging_steps"],
        "logging_first_step": True,  # a loss curve has a point even when the run is shorter than logging_steps
        "save_steps": block["save_steps"],
        "save_strategy": "steps",
        "save_total_limit": 2,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "eval_strategy": "epoch" if has_eval and not block.get("max_steps") else ("steps" if has_eval else "no"),
        "use_cpu": not torch.cuda.is_available(),
    }
    if block.get("max_steps"):
        args["max_steps"] = block["max_steps"]
        if has_eval:
            args["eval_steps"] = max(1, block["max_steps"] // 2)
    else:
        args["num_train_epochs"] = block["epochs"]
    compute = block.get("compute") or {}
    checkpointing = compute.get("activation_checkpointing")
    if checkpointing is None:  # TRL turns it on for fine-tuning: worth it on a GPU, only slower on a CPU
        checkpointing = fine_tuning and torch.cuda.is_available()
    args[_checkpointing_arg()] = bool(checkpointing)
    if compute.get("mixed_precision") == "bf16" and torch.cuda.is_available():
        args["bf16"] = True
    if compute.get("mixed_precision") == "fp16" and torch.cuda.is_available():
        args["fp16"] = True
    if kernels_used(block) == "liger":
        args["use_liger_kernel"] = True  # transformers' Trainer patches the model with Liger's kernels
    if distributed:
        args.update(distributed)
    return args


def kernels_used(block: Any) -> str:
    """The fused kernels a training step runs with: ``liger`` when its compute block asks for them and they can run
    here (the package and a CUDA GPU), else ``none`` with the reason (the manifest records it)."""
    import importlib.util

    import torch

    if (block.get("compute") or {}).get("kernels") != "liger":
        return "none"
    if importlib.util.find_spec("liger_kernel") is None:
        return "none (liger asked for; liger-kernel is not installed)"
    if not torch.cuda.is_available():
        return "none (liger asked for; no CUDA GPU here)"
    return "liger"


def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
