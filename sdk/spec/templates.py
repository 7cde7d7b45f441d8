"""Chat templates a model is trained with: checked at plan time, because a template that writes nothing after an
assistant message teaches the model no end of turn, and such a model never stops generating."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from sdk.spec.values import FileRef
from sdk.spec.weights import from_chain

_MARK = "ANSWER_7f3a"


def end_of_turn_problem(template: str) -> Optional[str]:
    """Why ``template`` cannot teach a model to end its turn, or None."""
    from sdk.templating import render_chat

    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _MARK}]
    try:  # rendered as training and serving render it: our sandbox, its budgets, transformers' options
        text = render_chat(template, messages, False, bos_token="<s>", eos_token="</s>")
    except Exception as e:  # noqa: BLE001 - refused (unbounded work, an escape) or failing: the user's to fix
        return str(e)
    if _MARK not in text:
        return "the chat template does not write the assistant's message"
    if not text.split(_MARK, 1)[1].strip():
        return ("the chat template writes nothing after an assistant message, so a model trained with it never "
                "learns where its answer ends and will not stop generating")
    return None


HINT = "end the assistant turn with a marker and the eos token, e.g. {{ message['content'] + '<|end|>' + eos_token }}"


def template_text(spec: Any, block: Any) -> Optional[str]:
    """The chat template a block names (a string or file()), or the one saved in a local base model's folder."""
    value = getattr(block, "chat_template", None)
    if isinstance(value, FileRef):
        path = (spec.base_dir / value.path).resolve()
        return path.read_text(encoding="utf-8") if path.is_file() else None
    if isinstance(value, str):
        return value
    folder = getattr(block, "path", None)
    if folder:
        base = (spec.base_dir / folder).resolve()
        if (base / "chat_template.jinja").is_file():
            return (base / "chat_template.jinja").read_text(encoding="utf-8")
        config = base / "tokenizer_config.json"
        if config.is_file():
            try:
                found = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
            except (OSError, ValueError):
                return None
            return found if isinstance(found, str) else None
    return None


def training_template(spec: Any, block: Any) -> Optional[str]:
    """The template a training step will use: its own chat_template, else the nearest one up its ``from`` chain
    (a step's, or a local base model's)."""
    for _, step in from_chain(spec, block):
        text = template_text(spec, step)
        if text is not None:
            return text
    return None


def chat_template_problems(spec: Any, label: str, block: Any, kind: str) -> list[Any]:
    """The plan-time check of kinds that train on chat turns (finetune, align, reward): the template they will
    train with must end an assistant turn with something the model can learn."""
    from sdk.spec.values import Problem

    if getattr(block, "format", "chat") == "text":
        return []
    text = training_template(spec, block)
    problem = end_of_turn_problem(text) if text else None
    if problem is None:
        return []
    where = "chat_template" if getattr(block, "chat_template", None) is not None else "from"
    return [Problem(path=(kind, label, where), message=problem, hint=HINT)]




# ------------------------------------------------------------------------ every template attribute, sandboxed

def template_attrs(block_cls: Any, depth: int = 0) -> tuple[str, ...]:
    """The fields of a block class that hold a template (a string or ``file(...)``: prompts, rubrics, chat
    templates), dotted inside its sub-blocks (``filters.rubric``): found from the schema, so a kind that adds one,
    at any level, is covered by the static check (and its test) without a list to keep."""
    import typing

    def holds_file(tp: Any) -> bool:
        return tp is FileRef or any(holds_file(a) for a in typing.get_args(tp))

    def models(tp: Any) -> list[Any]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for a in typing.get_args(tp) for m in models(a)]

    out: list[str] = []
    for name, f in getattr(block_cls, "model_fields", {}).items():
        if holds_file(f.annotation):
            out.append(name)
        elif depth < 3:
            out += [f"{name}.{sub}" for m in models(f.annotation) for sub in template_attrs(m, depth + 1)]
    return tuple(dict.fromkeys(out))


def attr_value(block: Any, attr: str) -> Any:
    """The value of a (dotted) attribute of a block, or None where a sub-block on the way is unset."""
    for part in attr.split("."):
        block = getattr(block, part, None)
    return block


def template_problems(spec: Any, kind: str, label: str, block: Any, check_files: bool) -> list[tuple[tuple, str]]:
    """(path, message) for each template attribute whose text the sandbox refuses before anything renders it
    (an escape payload, or unbounded work); a ``file(...)`` is read only when files are checked."""
    from sdk.spec.paths import confine, max_bytes, regular_file_problem
    from sdk.templating import problem

    out = []
    for attr in template_attrs(type(block)):
        value = attr_value(block, attr)
        text, shown = (value, "") if isinstance(value, str) else (None, "")
        nested = "." in attr  # the file checks of sdk.spec.paths see the top-level attributes only
        if isinstance(value, FileRef) and nested and (Path(value.path).is_absolute() or not (
                spec.base_dir / value.path).resolve().is_relative_to(spec.base_dir.resolve())):
            out.append(((kind, label, *attr.split(".")), f"file({value.path!r}) escapes the recipe's folder"))
            continue
        if isinstance(value, FileRef) and check_files:
            path, bad = confine(spec, value.path)
            why_not = bad or (regular_file_problem(path, value.path, max_bytes(spec)) if path is not None else None)
            if path is None or why_not:
                if nested and why_not:
                    out.append(((kind, label, *attr.split(".")), why_not))
                continue  # top level: reported by the file checks
            try:
                text, shown = path.read_text(encoding="utf-8"), f" (in {value.path})"
            except UnicodeDecodeError as e:  # read as UTF-8 wherever it is used: a traceback at plan or apply
                out.append(((kind, label, *attr.split(".")), f"file({value.path!r}) is not UTF-8 text ({e.reason} at "
                            f"byte {e.start}): save it as UTF-8"))
                continue
            except OSError:
                continue
        why = problem(text) if text else None
        if why:
            out.append(((kind, label, *attr.split(".")), f"the {attr} template{shown} is refused: {why}"))
        elif text and (kind, attr) in NEEDED:
            missing, strange = unused(text, NEEDED[(kind, attr)])
            if missing:
                near = difflib.get_close_matches(missing[0], strange, n=1)
                out.append(((kind, label, attr), f"the {attr} template{shown} never uses {' or '.join(missing)}: "
                            f"{NEEDED_WHY[missing[0]]} (its variables are {', '.join(NEEDED[(kind, attr)])}"
                            + (f"; {near[0]!r} is none of them)" if near else ")")))
    return out


# The variables a prompt must use, or what it asks is the same for every question (or never shows the passages)
NEEDED = {("rag", "prompt"): ("documents", "question"), ("reward", "prompt"): ("documents", "question"),
          ("eval", "prompt"): ("question",), ("synth", "prompt"): ("chunk",),
          ("synth", "answer_prompt"): ("question", "chunk")}
NEEDED_WHY = {"question": "every question would be asked as the same text",
              "documents": "the model would never see the passages retrieved for it",
              "chunk": "the teacher would never see the passage its row is grounded in"}


def unused(template: str, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The ``names`` a template never reads, and the other names it reads (none when it does not parse: that is
    reported where it renders)."""
    from jinja2 import TemplateSyntaxError, meta

    from sdk.templating import environment

    try:
        found = meta.find_undeclared_variables(environment().parse(template))
    except TemplateSyntaxError:
        return [], []
    return [n for n in names if n not in found], sorted(found - set(names))
