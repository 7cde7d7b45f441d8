"""Plan-time data checks: every data file a step that will run reads is read at plan time by the code the step
reads it with, so a bad row is a located ``FILE:LINE`` plan error before any step runs, not a failure after hours
of upstream training.

What is read, by kind (the function the step itself calls):

- ``corpus``: the rows of its JSONL files and the UTF-8 text of its text and markdown files, as the corpus step
  converts them (64 MiB over all its files; html and pdf are left to the converters);
- ``dataset``: its JSONL rows (:func:`sdk.backends.data.datasets.read_rows`) and the validation split;
- ``align``: its preference pairs or KTO rows (:func:`sdk.backends.data.preferences.read_preferences`), and for KTO
  both labels present (:func:`~sdk.backends.data.preferences.label_problem`);
- ``eval``: its items (:func:`sdk.evalsets.load_items`), the errors ``dsl eval-set check`` reports (duplicate
  ids, empty answers or choices: :func:`sdk.evalsets.check`), what its task needs (choices, two labels), and
  its Jinja prompt rendered for one item, and the experts' grades it reads (:mod:`sdk.datachecks_records`);
- ``route``: its examples (:func:`sdk.backends.routing.route.read_examples`) with their targets, and whether they
  and its eval sets' questions are enough to train on (:mod:`sdk.datachecks_records`);
- ``reward``: its prompts, from the prompts file or the dataset (the reward backend's reader), and the context
  its citation rewards need;
- ``rag``: its Jinja prompt rendered with one document and a question (:meth:`RagSystem.render_prompt`), and the
  pairs its ``adapt`` learns from (:mod:`sdk.datachecks_records`);
- ``synth``: the experts' review decisions it applies (:mod:`sdk.datachecks_records`);
- ``finetune``, ``align``: rows rendered with a known chat template, and LoRA modules (:mod:`sdk.datachecks_models`).
Chat templates are checked by the kinds' own plan checks (:mod:`sdk.spec.templates`).

Bounded in time: a file up to :data:`CHECK_BYTES` (64 MiB; ``DSL_PLAN_CHECK_BYTES`` to change it, 0 for no
bound) is read whole, as the step reads it (JSONL one line at a time, :mod:`sdk.jsonl`); of a larger file only
its first 64 MiB of whole lines are read, through a temporary copy of them streamed in 1 MiB pieces (same file
name, same line numbers, same reader), and the checks that need every row (a KTO file with one label, two labels
for classification, the validation split) are left to the step. Nothing is sampled: the rows checked are the
first ones, all of them. On the shared 2-core machine (load 9) a 96 MiB preference file (276,547 pairs) is
checked on its first 64 MiB in 3.0-3.4 s, the process at 168 MiB of memory at most. Encrypted zips (their
password is a secret read when the step runs) are left to the step too.

Backends are imported here, never by the spec (``sdk.spec`` imports nothing of backends).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdk.datachecks_hints import data_hint
from sdk.datachecks_models import chat_row_problems, lora_problems
from sdk.datachecks_records import (adapt_problems, decisions_problems, gold_source_problems, grades_problems,
                                    preference_warnings, route_problems)
from sdk.errors import DataError, DslError
from sdk.spec.values import FileRef, Problem

CHECK_BYTES = 64 * 2**20  # a larger file: only its first CHECK_BYTES of whole lines are checked at plan time
PIECE = 2**20


def check_bytes() -> int:
    """How much of a data file the plan reads (``DSL_PLAN_CHECK_BYTES``, default 64 MiB; 0: all of it)."""
    from sdk.limits import limit

    return limit("DSL_PLAN_CHECK_BYTES", CHECK_BYTES)


@contextmanager
def bounded(path: Path) -> Iterator[tuple[Path, bool]]:
    """``(file to read, whole)``: the file itself when it is at most :func:`check_bytes`, else a temporary copy of
    its first bytes cut after the last whole line (same name, same line numbers) and ``whole = False``."""
    cap = check_bytes()
    if path.stat().st_size <= cap:
        yield path, True
        return
    with tempfile.TemporaryDirectory(prefix="dsl-check-") as tmp:
        copy = Path(tmp) / path.name
        wrote = False
        with open(path, "rb") as src, open(copy, "wb") as dst:
            left, tail = cap, b""
            while left > 0:
                piece = src.read(min(PIECE, left))
                if not piece:
                    break
                left -= len(piece)
                cut = piece.rfind(b"\n")
                if cut < 0:
                    tail += piece
                    continue
                dst.write(tail + piece[:cut + 1])
                tail, wrote = piece[cut + 1:], True
        if not wrote:  # not one whole line in the bound: the reader's own line limit decides, reading it all
            yield path, True
            return
        yield copy, False


def _file_level(e: DataError, whole: bool) -> bool:
    """An error about the whole file (no rows at all) seen in a part of it only: not an error of the file."""
    return not whole and e.line is None and "UTF-8" not in str(e)


def _problem(at: tuple[Any, ...], e: DslError, path: Path | None = None) -> Problem:
    """The reader's error at the attribute ``at``, with its hint, or one saying what the file ``path`` looks like
    (another encoding, a byte order mark, a JSON array or a CSV where JSONL is read: :mod:`sdk.datachecks_hints`)."""
    hint = e.diagnostics[0].hint if e.diagnostics else None
    if hint is None and isinstance(e, DataError):
        hint = data_hint(path, e)
    return Problem(path=at, message=str(e), hint=hint)


def _source(spec: Any, rel: str | None) -> Path | None:
    """The file a step reads, or None when it is missing or not a file (the spec's own checks say so)."""
    if not rel or not isinstance(rel, str):  # not a file: a step's output (eval data = synth.X) is read when it runs
        return None
    path = spec.resolve_path(rel)
    return path if path.is_file() else None


def _dataset(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.data.datasets import read_rows, split

    path = _source(spec, block.path)
    if path is None:
        return []
    at = ("dataset", label, "path")
    whole = True
    try:
        with bounded(path) as (source, whole):
            rows = read_rows(source, block, block.path)
    except DataError as e:
        return [] if _file_level(e, whole) else [_problem(at, e, path)]
    try:
        if whole:
            split(rows, block.validation_split)
    except DslError as e:  # the split: say which file and how many rows
        return [Problem(path=("dataset", label, "validation_split"),
                        message=f"{block.path}: {str(e).lstrip(': ')} ({len(rows)} row{'s' * (len(rows) != 1)}, validation_split = "
                                f"{block.validation_split})", hint="add rows, or lower validation_split (0: none)")]
    return []


def _align(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.data.preferences import label_problem, read_preferences, summary_of

    path = _source(spec, block.pairs) if isinstance(block.pairs, str) else None  # synth.X: checked when it runs
    if path is None:
        return []
    at = ("align", label, "pairs")
    whole = True
    try:
        with bounded(path) as (source, whole):
            rows = read_preferences(source, block.pairs, block.method, block.fields)
    except DataError as e:
        return [] if _file_level(e, whole) else [_problem(at, e, path)]
    if not rows and whole:
        what = "no preference examples" if block.method == "kto" else "no preference pairs"
        return [Problem(path=at, message=f"{block.pairs}: {what}")]
    rendered = chat_row_problems(spec, "align", label, block, rows, block.pairs, at)
    if rendered:
        return rendered
    summary = summary_of(rows, block.method)
    if whole and block.method == "kto":
        problem = label_problem(summary)
        if problem:
            return [Problem(path=at, message=f"{block.pairs}: {problem}",
                            hint="add answers with the other label, or use dpo/orpo on pairs")]
    return preference_warnings(block, summary, at, whole)


def _eval(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.eval.answers import Prompter, task_of
    from sdk.evalsets import check, load_items, scored_items

    out: list[Problem] = []
    path = _source(spec, block.data)
    at = ("eval", label, "data")
    items, whole = None, True
    if path is not None and path.suffix.lower() != ".zip" and block.password is None:
        try:
            with bounded(path) as (source, whole):
                items = load_items(source, block, block.data, limit=block.limit)
        except DataError as e:
            if not _file_level(e, whole):
                out.append(_problem(at, e, path))
    if items is not None and whole:
        try:  # what the eval step scores: a set of only training items leaves nothing
            scored_items(items, block.data)
        except DataError as e:
            out.append(_problem(at, e))
    if items is not None:
        for f in check(items):
            if f.severity == "error":
                where = f"{block.data}:{f.line}" if f.line else block.data
                out.append(Problem(path=at, message=f"{where}: {f.message}",
                                   hint="answers are stored by item id: give every item its own id"
                                   if f.message.startswith("duplicate id") else None))
                break  # the first is enough to stop the plan; dsl eval-set check lists them all
        task = task_of(block, items)
        if task == "multiple_choice" and not all(it.choices for it in items):
            bad = next(it for it in items if not it.choices)
            out.append(Problem(path=at, message=f"{block.data}:{bad.line}: item {bad.id} has no choices but the task "
                                                "is multiple_choice"))
        from sdk.expr import metrics
        from sdk.spec.blocks.eval import RETRIEVAL_METRICS

        if whole and block.gate is not None and not any(it.sources for it in items):
            for m in (m for m in metrics(block.gate) if m.metric in RETRIEVAL_METRICS):
                out.append(Problem(path=("eval", label, "gate"), focus=str(m),
                                   message=f"no item of {block.data} names its gold sources, so {m} is never measured",
                                   hint="give items \"sources\": [\"doc.md\"] (or map a column with fields = "
                                        "{ sources = \"...\" }), or gate on an answer metric"))
                break
        out += gold_source_problems(spec, label, block, items, block.data) if whole else []
        gated = {m.metric for m in metrics(block.gate)} if block.gate is not None else set()
        unmeasured = [m for m in block.metrics if m in RETRIEVAL_METRICS and m not in gated]
        if whole and unmeasured and not any(it.sources for it in items):
            out.append(Problem(path=("eval", label, "metrics"), severity="warning", message=f"no item of {block.data} "
                               f"names its gold sources, so {', '.join(unmeasured)} {'are' if unmeasured[1:] else 'is'} never "
                               "measured"))
        labels = sorted({it.label for it in items if it.label is not None})
        if task == "classification" and whole and len(labels) < 2:
            out.append(Problem(path=at, message=f"{block.data}: classification needs at least two labels; found "
                                                f"{labels or 'none'}",
                               hint="map the label column with fields = { label = \"...\" }"))
    out += grades_problems(spec, label, block)
    template = _text(spec, block.prompt)
    if template is not None:
        from sdk.evalsets import EvalItem

        sample = items[0] if items else EvalItem(id="1", question="question?", answers=["answer"])
        try:
            Prompter(template)(sample, "context")
        except DslError as e:  # jinja's message, from the sandbox the eval renders it in
            out.append(Problem(path=("eval", label, "prompt"), message=str(e),
                               hint="its variables are question, choices and context"))
    return out


def _route(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.routing.route import known_targets, read_examples

    path = _source(spec, block.examples)
    if path is None and block.examples:
        return []  # missing: the spec's own check says so
    whole, examples = True, []
    try:
        if path is not None:
            with bounded(path) as (source, whole):
                examples = read_examples(source, block.examples, known_targets(block))
    except DataError as e:
        return [] if _file_level(e, whole) else [_problem(("route", label, "examples"), e, path)]
    return route_problems(spec, label, block, examples) if whole else []


def _reward(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.data.rows import rel as _rel
    from sdk.backends.training.reward import RewardBackend
    from sdk.backends.training.reward_data import needs_context

    if block.data is not None:
        if not spec.has(block.data) or spec.get(block.data).format == "text":
            return []  # the kind's plan check says so
        path, at = _source(spec, spec.get(block.data).path), ("reward", label, "data")
    else:
        path, at = _source(spec, block.prompts), ("reward", label, "prompts")
    if path is None:
        return []
    shown = _rel(path, Path.cwd())  # as the reward backend names it (its own plan check reads the rows too)
    whole = True
    try:
        with bounded(path) as (source, whole):
            rows = RewardBackend._rows(block, spec, source, shown)
        if not rows and whole:  # as the reward step refuses it
            raise DataError(shown, None, "no prompts")
        needs_context(rows, block.rewards, shown, retrieved=block.retrieval is not None)
    except DataError as e:
        return [] if _file_level(e, whole) else [_problem(at, e, path)]
    with_context = next((r for r in rows if r["context"]), None)
    if with_context is not None and block.retrieval is None:  # asked through the prompt, as the step asks it
        from sdk.backends.rag.system import prompt_text
        from sdk.backends.training.reward_data import asked

        try:
            asked(with_context, prompt_text(spec, block))
        except DslError as e:
            return [Problem(path=("reward", label, "prompt"), message=str(e),
                            hint="its variables are documents and question")]
    return []


def _corpus(spec: Any, label: str, block: Any) -> list[Problem]:
    """The rows of its JSONL files and the text of its text and markdown files, read as the corpus step converts
    them (UTF-8, then each JSONL row's ``text_field``), until :func:`check_bytes` have been read over all files;
    html and pdf are left to the step's converters."""
    from sdk.backends.rag.corpus import format_of, jsonl_rows, rel, decode_text, corpus_files
    from sdk.jsonl import parse_jsonl

    try:
        files = corpus_files(spec, block)
    except DslError:
        return []  # the spec's own glob checks say so
    budget, longest, unread = check_bytes(), 0, False
    for path in files:
        if budget <= 0:
            unread = True
            break
        try:
            fmt = format_of(path, block)
        except DataError:
            unread = True
            continue  # the backend's check names a file of unknown format
        if fmt not in ("jsonl", "text", "markdown"):
            unread = True
            continue
        shown, whole = rel(path, spec.base_dir), True
        try:
            with bounded(path) as (source, whole):
                data = source.read_bytes()
            budget -= len(data)
            text = decode_text(data, shown)
            if fmt == "jsonl":
                text = " ".join(t for t, _ in jsonl_rows(parse_jsonl(text.split("\n"), shown, objects=False), shown,
                                                         block.text_field))
            longest = max(longest, len(text.strip()))
        except DataError as e:
            if not _file_level(e, whole):
                return [_problem(("corpus", label, "paths"), e, path)]
    if files and not longest and not unread:  # nothing to chunk: every step after it would train or index nothing
        shown = rel(files[0], spec.base_dir) + (f" and the {len(files) - 1} other files" if len(files) > 1 else "")
        return [Problem(path=("corpus", label, "paths"), message=f"{shown} of corpus.{label}: no text (every file "
                        "is empty or blank), so there is nothing to chunk")]
    return []


def _rag(spec: Any, label: str, block: Any) -> list[Problem]:
    from sdk.backends.rag.system import RagSystem, prompt_text

    adapted = adapt_problems(spec, label, block)
    if block.prompt is None or (isinstance(block.prompt, FileRef) and _source(spec, block.prompt.path) is None):
        return adapted
    system = RagSystem(spec=spec, label=label, block=block, pipeline=None, prompt=prompt_text(spec, block))
    doc = {"id": "1", "content": "text", "meta": {"source": "doc.md"}, "score": 1.0}
    try:
        system.render_prompt("question?", [doc])
    except DslError as e:
        return adapted + [Problem(path=("rag", label, "prompt"), message=str(e),
                                  hint="its variables are documents (each with content, meta and id) and question")]
    return adapted


def _text(spec: Any, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, FileRef):
        path = _source(spec, value.path)
        return path.read_text(encoding="utf-8") if path is not None else None
    return str(value)


def _finetune(spec: Any, label: str, block: Any) -> list[Problem]:
    """The dataset's rows rendered with the chat template the fine-tune trains with, where it is known."""
    from sdk.backends.data.datasets import read_rows

    data = spec.get(block.data) if block.data.kind == "dataset" and spec.has(block.data) else None
    path = _source(spec, data.path) if data is not None and data.format != "text" else None
    if path is None:
        return []
    try:
        with bounded(path) as (source, _):
            rows = read_rows(source, data, data.path)
    except DataError:
        return []  # the dataset's own check names the bad row
    return chat_row_problems(spec, "finetune", label, block, rows, data.path, ("finetune", label, "data"))


def _tuned(check: Callable[[Any, str, Any], list[Problem]] | None, kind: str) -> Callable[[Any, str, Any], list[Problem]]:
    """A training kind's check, and its LoRA target modules against the model it starts from."""
    return lambda spec, label, block: (check(spec, label, block) if check else []) + \
        lora_problems(spec, kind, label, block)


CHECKS: dict[str, Callable[[Any, str, Any], list[Problem]]] = {
    "corpus": _corpus, "dataset": _dataset, "align": _tuned(_align, "align"), "eval": _eval, "route": _route,
    "reward": _tuned(_reward, "reward"), "rag": _rag, "synth": decisions_problems, "finetune": _tuned(_finetune, "finetune"),
}


def register(kind: str, check: Callable[[Any, str, Any], list[Problem]]) -> None:
    """A plugin kind's data check: ``check(spec, label, block) -> [Problem]``, run for its steps that will run."""
    CHECKS[kind] = check


def data_problems(spec: Any, kind: str, label: str, block: Any) -> list[Problem]:
    """Problems in the data files a ``kind.label`` step will read, each at the attribute that names the file, its
    message starting ``FILE:LINE``. A file that cannot be read at all is the spec's own error, not repeated."""
    check = CHECKS.get(kind)
    if check is None:
        return []
    try:
        return check(spec, label, block)
    except OSError as e:
        return [Problem(path=(kind, label), message=f"cannot read a file of {kind}.{label}: {e.strerror or e}")]
