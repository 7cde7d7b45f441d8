"""A training job: what a training step (pretrain, finetune, align, reward) hands its job function, in this
process or, under a launcher, to every rank in ``job.json``. :func:`check_job` checks one before it runs,
:func:`save_job` / :func:`load_job` are the one place ``job.json`` is written and read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from sdk.errors import DslError
from sdk.records.files import parse_json, problems, read_text_nofollow, validate, write_atomic

JOB_JSON = "job.json"


class BaseModelRef(BaseModel):
    """The model a job starts from."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    adapter: Optional[str] = None
    tokenizer: Optional[str] = None
    revision: Optional[str] = None


class TrainingJob(BaseModel):
    """The fields every training job has. ``extra="allow"``: each kind adds its own (a fine-tune its train and
    validation files and chat template, an alignment its preference rows, a reward step its prompts and judge),
    which its job function reads."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: str
    step_id: str
    out_dir: str
    checkpoint_dir: str
    block: dict[str, Any]
    base: Optional[BaseModelRef] = None
    data_hashes: dict[str, Any] = {}
    result_path: Optional[str] = None


def check_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job built by a step, checked (a missing or mistyped field is a bug of ours, named before anything runs)."""
    from pydantic import ValidationError

    try:
        TrainingJob.model_validate(job)
    except ValidationError as e:
        raise DslError(f"{job.get('step_id', 'a training step')}: its training job is malformed ({problems(e)})") \
            from None
    return job


def save_job(job: dict[str, Any], folder: Path) -> Path:
    """Write ``job.json`` as the step built it (checked first)."""
    path = Path(folder) / JOB_JSON
    write_atomic(path, json.dumps(check_job(job)))
    return path


def load_job(path: Path) -> dict[str, Any]:
    """``job.json`` as the launched process reads it: validated, a damaged one named (file and field)."""
    try:
        text = read_text_nofollow(Path(path), follow=True)  # a regular file only (never a FIFO)
    except (OSError, UnicodeDecodeError) as e:
        raise DslError(f"{path}: the training job is unreadable ({type(e).__name__})") from None
    data = parse_json(text, path, "the training job")
    validate(TrainingJob, data, path, "the training job")
    return data
