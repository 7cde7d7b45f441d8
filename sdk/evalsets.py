"""Eval sets: JSONL rows ``{id, question, answer, choices?, label?, sources?, tags?, annotator?, notes?}``, or a
public format mapped onto them by the eval block's ``fields`` (JSON dicts, TSV, AES-encrypted zips)."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import DataError, DslError
from sdk.jsonl import parse_jsonl, read_jsonl
from sdk.limits import MAX_ITEM_CHARS, MAX_UNZIPPED_BYTES, limit
from sdk.metrics import ngrams, normalize


@dataclass
class EvalItem:
    id: str
    question: str
    answers: list[str]
    choices: list[str] | None = None
    label: str | None = None
    sources: list[str] = field(default_factory=list)
    context: str | None = None
    tags: list[str] = field(default_factory=list)
    line: int | None = None

    @property
    def gold(self) -> str:
        if self.label is not None:
            return self.label
        if self.choices is not None and self.answers:
            return self.answers[0]
        return self.answers[0] if self.answers else ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [], "")}


def source_key(source: Any) -> str:
    """Sources compare by file stem, so that gold ``sip`` or ``docs/sip.md`` matches a chunk from ``/x/docs/sip.md``:
    the eval's retrieval metrics, the rag adapt step's pairs and the plan's checks of both match them so."""
    text = str(source or "")
    return Path(text).stem if text else text


def _rows(path: Path, fmt: str, shown: str, password: str | None) -> list[tuple[int | None, Any, dict[str, Any]]]:
    """(line, key, row) for every row of the file."""
    if path.suffix.lower() == ".zip":
        return _zip_rows(path, fmt, shown, password)
    if (fmt if fmt != "auto" else _format(path.name)) == "jsonl":  # one line at a time, each line bounded
        return [(n, None, obj) for n, obj in read_jsonl(path, shown)]
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte order mark (Windows editors write one) is not data
    except UnicodeDecodeError as e:
        raise DataError(shown, None, f"not UTF-8 text ({e.reason})") from None
    return _text_rows(text, fmt if fmt != "auto" else _format(path.name), shown)


def _format(name: str) -> str:
    low = name.lower()
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".tsv"):
        return "tsv"
    return "json" if low.endswith((".json", ".txt")) else "jsonl"


def _text_rows(text: str, fmt: str, shown: str) -> list[tuple[int | None, Any, dict[str, Any]]]:
    out: list[tuple[int | None, Any, dict[str, Any]]] = []
    if fmt == "jsonl":
        for n, obj in parse_jsonl(text.split("\n"), shown):
            out.append((n, None, obj))
    elif fmt == "tsv":
        reader = csv.DictReader(io.StringIO(text), delimiter="\t")
        header = reader.fieldnames or []
        if len(header) == 1 and any(c in header[0] for c in ",;|"):
            raise DataError(shown, 1, f"the header {header[0][:60]!r} has no tab: TSV columns are separated by tabs",
                            "save the file as tab-separated (or as JSONL); a comma-separated file is not read")
        for n, row in enumerate(reader, start=2):
            out.append((n, None, dict(row)))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(shown, e.lineno, f"malformed JSON: {e.msg}") from None
        except RecursionError:  # a JSON bomb nested thousands deep
            raise DataError(shown, None, "malformed JSON: nested too deep") from None
        except ValueError as e:  # an integer of thousands of digits
            raise DataError(shown, None, f"malformed JSON: {str(e).split(':')[0].lower()}") from None
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for key, row in items:
            if not isinstance(row, dict):
                raise DataError(shown, None, f"entry {key!r} is not an object")
            out.append((None, key, row))
    return out


def _zip_rows(path: Path, fmt: str, shown: str, password: str | None) -> list[tuple[int | None, Any, dict[str, Any]]]:
    try:
        import pyzipper
    except ImportError:
        raise DataError(shown, None, "reading zip files needs pyzipper (pip install pyzipper)") from None
    try:
        with pyzipper.AESZipFile(path) as zf:
            if password:
                zf.setpassword(password.encode())
            names = [n for n in zf.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
            if not names:
                raise DataError(shown, None, "the zip file is empty")
            name = names[0]
            cap = limit("DSL_MAX_UNZIPPED_BYTES", MAX_UNZIPPED_BYTES)
            if zf.getinfo(name).file_size > cap:  # a zip bomb: the reader stops at the declared size, checked here
                raise DataError(shown, None, f"{name} unpacks to {zf.getinfo(name).file_size:,} bytes, over the "
                                f"limit of {cap:,} (export DSL_MAX_UNZIPPED_BYTES=<bytes> to raise it)")
            text = zf.read(name).decode("utf-8")
    except RuntimeError as e:
        raise DataError(shown, None, f"cannot open the zip ({e}); is password = env(\"...\") set?") from None
    except DataError:
        raise
    except (pyzipper.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:  # damaged, not UTF-8
        raise DataError(shown, None, f"cannot read the zip ({str(e)[:200] or type(e).__name__})") from None
    return _text_rows(text, fmt if fmt != "auto" else _format(name), f"{shown}!{name}")


def _get(row: dict[str, Any], key: str | None) -> Any:
    return row.get(key) if key else None


def max_item_chars() -> int:
    """The longest question, answer, choice or context of an eval item, in characters (``DSL_MAX_ITEM_CHARS``,
    default 256 Ki; 0 for no limit)."""
    return limit("DSL_MAX_ITEM_CHARS", MAX_ITEM_CHARS)


def _bounded(item: EvalItem, shown: str, where: int | None, key: Any, index: int, cap: int) -> EvalItem:
    """``item``, or a DataError at its line naming the field that is too long."""
    fields = [("question", item.question), ("context", item.context or "")]
    fields += [("answer", a) for a in item.answers] + [("choice", c) for c in item.choices or []]
    for name, text in fields:
        if len(text) > cap:
            row = key if key is not None else index + 1
            raise DataError(shown, where, f"row {row}: the {name} is {len(text):,} characters, over the limit of "
                            f"{cap:,}", "shorten it, or raise the limit: max_item_chars = <characters> in the "
                            "domain block (0: no limit; or export DSL_MAX_ITEM_CHARS where the recipe sets none)")
    return item


def load_items(path: Path, block: Any, shown: str | None = None, limit: int | None = None) -> list[EvalItem]:
    """Read and map every row; raise DataError naming the file and line of a bad one (an item with a question,
    answer, choice or context longer than :func:`max_item_chars` included)."""
    shown = shown or str(path)
    cap = max_item_chars()
    fields = block.fields
    password = block.password.resolve() if getattr(block, "password", None) else None
    items: list[EvalItem] = []
    for index, (line, key, row) in enumerate(_rows(path, block.format, shown, password)):
        where = line
        question = _get(row, fields.question)
        if not isinstance(question, str) or not question.strip():
            raise DataError(shown, where, f"row {key if key is not None else index + 1} has no question in field {fields.question!r}",
                            "map the right column with fields = { question = \"...\" }")
        choices: list[str] | None = None
        if fields.choices:
            if "*" in fields.choices or "?" in fields.choices:
                keys = sorted((k for k in row if fnmatch.fnmatch(k, fields.choices) and row[k] not in (None, "")),
                              key=lambda k: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", k)])
                choices = [str(row[k]) for k in keys]
            else:
                value = row.get(fields.choices)
                if not isinstance(value, list):
                    raise DataError(shown, where, f"field {fields.choices!r} must be a list of choices")
                choices = [str(c) for c in value]
        elif isinstance(row.get("choices"), list):
            choices = [str(c) for c in row["choices"]]
        elif row.get("choices") not in (None, ""):  # "a, b" would be dropped, and the item asked as an open question
            raise DataError(shown, where, "'choices' must be a list of choices, e.g. [\"a\", \"b\"]",
                            "or map columns with fields = { choices = \"option *\" }")
        if not isinstance(row.get("tags", []), list):  # "train" would be dropped, and a training item scored
            raise DataError(shown, where, "'tags' must be a list, e.g. [\"train\"]")
        raw_answer = _get(row, fields.answer)
        answers = [str(a) for a in raw_answer] if isinstance(raw_answer, list) else \
            ([str(raw_answer)] if raw_answer not in (None, "") else [])
        if fields.answer_pattern and answers:
            m = re.search(fields.answer_pattern, answers[0])
            if not m:
                raise DataError(shown, where, f"answer {answers[0]!r} does not match answer_pattern {fields.answer_pattern!r}")
            answers = [m.group(1)]
        label = _get(row, fields.label) if fields.label else row.get("label")
        label = str(label).strip() if label not in (None, "") else None
        if choices is not None:
            answers = [_choice_answer(a, choices, shown, where) for a in answers[:1]]
        if not answers and label is None:
            raise DataError(shown, where, "row has neither an answer nor a label")
        sources_raw = _get(row, fields.sources) if fields.sources else row.get("sources")
        sources = [str(s) for s in sources_raw] if isinstance(sources_raw, list) else ([str(sources_raw)] if sources_raw else [])
        context = _get(row, fields.context)
        if isinstance(context, list):
            context = "\n".join(str(c) for c in context)
        item_id = _get(row, fields.id) if fields.id else row.get("id", key)
        items.append(_bounded(EvalItem(id=str(item_id if item_id is not None else index + 1), question=question.strip(),
                              answers=answers, choices=choices, label=label, sources=sources,
                              context=context if isinstance(context, str) else None,
                              tags=[str(t) for t in row.get("tags", [])] if isinstance(row.get("tags"), list) else [],
                              line=line), shown, where, key, index, cap))
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(shown, None, "the eval set has no usable items")
    return items


def synth_items(art: Any, block: Any, limit: int | None = None,
                empty_ok: bool = False) -> tuple[list[EvalItem], str]:
    """The items of ``eval { data = synth.X }``: the candidates of the applied synth step ``art`` (task eval, review
    required) that experts accepted or edited, the edited text winning (its ``rows.jsonl``, in the eval-set
    format), and a line saying how many of its candidates that is. With none accepted yet, a DslError saying the
    eval awaits review (or, with ``empty_ok``, no items)."""
    rows = art.path / (art.outputs.get("rows") or "rows.jsonl")
    shown = f"{art.step_id}/{rows.name}"
    cands = art.path / (art.outputs.get("candidates") or "candidates.jsonl")
    total = sum(1 for x in cands.read_text(encoding="utf-8").split("\n") if x.strip()) if cands.is_file() else 0
    accepted = sum(1 for x in rows.read_text(encoding="utf-8").split("\n") if x.strip()) if rows.is_file() else 0
    by = (art.manifest.get("metrics") or {}).get("by_reason") or {}
    rest = ", ".join(f"{by[k]} {w}" for k, w in (("review_rejected", "rejected"), ("review_pending", "pending"))
                     if by.get(k))
    note = f"{accepted} of {total} candidates of {art.step_id} accepted" + (f" ({rest})" if rest else "")
    if not accepted:
        if empty_ok:
            return [], note
        raise DslError(f"awaiting review: {note}; accept or edit them in the Review view of dsl ui (or with dsl "
                       f"review import), then apply again")
    return load_items(rows, block, shown, limit=limit), note


TRAIN_TAG = "train"  # items an eval set declares as its training split (retrieval adaptation reads them)


def scored_items(items: list[EvalItem], shown: str) -> tuple[list[EvalItem], int]:
    """The items an eval scores and how many it holds out: those tagged ``train`` are for training, never scored."""
    scored = [it for it in items if TRAIN_TAG not in it.tags]
    if not scored:
        raise DataError(shown, None, f"every item is tagged {TRAIN_TAG!r} (the training split): none is left to score")
    return scored, len(items) - len(scored)


def _choice_answer(answer: str, choices: list[str], shown: str, line: int | None) -> str:
    """The answer of a multiple-choice row as the text of the right choice (given as its text or its number)."""
    if answer in choices:
        return answer
    if answer.strip().isdigit() and 1 <= int(answer) <= len(choices):
        return choices[int(answer) - 1]
    for c in choices:
        if normalize(c) == normalize(answer):
            return c
    raise DataError(shown, line, f"answer {answer!r} is not among the choices {choices}")


# ------------------------------------------------------------------------------------------------ checks


@dataclass
class Finding:
    severity: str  # error | warning
    message: str
    item: str | None = None
    line: int | None = None


def check(items: list[EvalItem], train_texts: list[str] = (), n: int = 13) -> list[Finding]:  # type: ignore[assignment]
    """Problems worth fixing before spending compute: duplicates, empty fields, answers not among the
    choices, label imbalance, and questions that also appear in the training data."""
    out: list[Finding] = []
    seen_ids: dict[str, tuple[EvalItem, int]] = {}
    seen_q: dict[str, EvalItem] = {}
    for n_item, it in enumerate(items, 1):
        if it.id in seen_ids:
            first, at = seen_ids[it.id]
            where = f"on line {first.line}" if first.line is not None else f"item {at} of the set"
            out.append(Finding("error", f"duplicate id {it.id!r} (also {where})", it.id, it.line))
        seen_ids.setdefault(it.id, (it, n_item))
        q = normalize(it.question)
        if q in seen_q:
            out.append(Finding("warning", f"duplicate question (same as item {seen_q[q].id})", it.id, it.line))
        seen_q.setdefault(q, it)
        if any(not a.strip() for a in it.answers):
            out.append(Finding("error", "empty answer", it.id, it.line))
        if it.choices is not None and any(not c.strip() for c in it.choices):
            out.append(Finding("error", "empty choice", it.id, it.line))
        elif it.choices is not None and len(it.choices) < 2:
            out.append(Finding("error", f"a multiple-choice item needs at least 2 choices, this one has "
                                        f"{len(it.choices)}", it.id, it.line))
        elif it.choices is not None and len({c.strip() for c in it.choices}) < len(it.choices):
            twice = next(c for i, c in enumerate(it.choices) if c.strip() in {x.strip() for x in it.choices[:i]})
            out.append(Finding("warning", f"choice {twice!r} appears twice (an answer naming it cannot be told "
                                          "apart)", it.id, it.line))  # real sets have them (TeleQnA: a few items)
    labels = Counter(it.label for it in items if it.label is not None)
    if len(labels) > 1:
        top, count = labels.most_common(1)[0]
        if count / sum(labels.values()) > 0.7:
            out.append(Finding("warning", f"label imbalance: {top!r} is {count / sum(labels.values()):.0%} of the items "
                                          f"({dict(labels)}); report macro-F1 next to accuracy"))
    if train_texts:
        haystack = "\n" + "\n".join(normalize(t) for t in train_texts) + "\n"
        grams: set[tuple[str, ...]] = set()
        for t in train_texts:
            grams |= ngrams(t, n)
        for it in items:
            q = normalize(it.question)
            if q and (f"\n{q} " in haystack or f" {q} " in haystack or f" {q}\n" in haystack or f"\n{q}\n" in haystack):
                out.append(Finding("error", "the question appears verbatim in the training data", it.id, it.line))
            elif ngrams(it.question, n) & grams:
                out.append(Finding("warning", f"the question shares a {n}-gram with the training data", it.id, it.line))
    return out


def contamination(items: list[EvalItem], texts: list[str], n: int = 13) -> dict[str, float]:
    """item id -> share of the item's n-grams (question and answers) found in ``texts``."""
    grams: set[tuple[str, ...]] = set()
    for t in texts:
        grams |= ngrams(t, n)
    out: dict[str, float] = {}
    for it in items:
        own = ngrams(" ".join([it.question] + it.answers), n)
        out[it.id] = (len(own & grams) / len(own)) if own else 0.0
    return out


# ------------------------------------------------------------------------------------------------ export


def export_lm_eval(items: list[EvalItem], out_dir: Path, task: str, max_new_tokens: int = 64) -> Path:
    """An lm-evaluation-harness task (YAML + JSONL) that ``lm_eval --include_path OUT_DIR --tasks TASK`` runs.

    Multiple-choice and classification sets become ``output_type: multiple_choice`` (the labels are the choices),
    scored like our own log-likelihood scoring: the prompt ``Question: ...\nAnswer:`` then " " + option
    (``target_delimiter: " "``). Other sets become ``generate_until`` with exact match. The YAML names the JSONL
    by absolute path (lm-eval reads ``data_files`` relative to the working directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (out_dir / f"{task}.jsonl").resolve()
    labels = sorted({it.label for it in items if it.label is not None})
    mc = all(it.choices for it in items)
    cls = not mc and all(it.label is not None for it in items) and len(labels) > 1
    with open(data, "w", encoding="utf-8") as f:
        for it in items:
            row: dict[str, Any] = {"id": it.id, "prompt": f"Question: {it.question}\nAnswer:", "question": it.question}
            if mc:
                row["choices"] = it.choices
                row["gold"] = it.choices.index(it.answers[0])  # type: ignore[union-attr]
            elif cls:
                row["choices"] = labels
                row["gold"] = labels.index(it.label)  # type: ignore[arg-type]
            else:
                row["answer"] = it.answers[0] if it.answers else (it.label or "")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    head = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            "test_split: test\ndoc_to_text: prompt\n")
    if mc or cls:
        body = ("output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: gold\ntarget_delimiter: \" \"\n"
                "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    else:
        body = ("output_type: generate_until\ndoc_to_target: answer\ntarget_delimiter: \" \"\n"
                f"generation_kwargs:\n  until: [\"\\n\"]\n  do_sample: false\n  max_gen_toks: {int(max_new_tokens)}\n"
                "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
                "    ignore_case: true\n    ignore_punctuation: true\n")
    yaml_path = out_dir / f"{task}.yaml"
    yaml_path.write_text(head + body + "metadata:\n  version: 1.0\n", encoding="utf-8")
    return yaml_path
