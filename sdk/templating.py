"""The one Jinja environment of the project: every template it renders (rag, eval and reward prompts, the dry run
of chat templates at plan time) goes through :func:`environment` / :func:`render`.

A template may come from someone else (a shared recipe, a prompt file, an ``extends`` base), so it is data, never
code: the environment is jinja2's ``ImmutableSandboxedEnvironment`` (no ``__class__``/``__globals__`` walks, no
``__subclasses__``, no mutation of passed values, ``str.format`` checked), with ``StrictUndefined`` and bounded
work: ``range`` and every loop over the data passed in (lists, tuples, strings, also inside dicts) share one
budget of items per render, so nested loops over a large input stop instead of running for hours, ``*`` and
``**`` cannot build huge values, padding widths (``center``,
``indent``, format specs like ``{:>1000000000}``) are capped, and the output has a size limit. Autoescape is off
by default (prompts are plain text) and on for HTML (``autoescape=True``).

:func:`problem` is the static check run at validation time on every template attribute of every kind: it refuses
the known escape payloads before anything renders, so the error is located at the recipe's value."""

from __future__ import annotations

import contextvars
import functools
import re
from typing import Any, Optional

from sdk.errors import DslError
from sdk.template_limits import MAX_VALUE as MAX_VALUE_BUILT
from sdk.template_limits import bounded_concat, call_problem, filter_problem, too_large

MAX_RANGE_ITEMS = 100_000  # items all range() calls of one render may produce together
MAX_VALUE = 1_000_000  # characters (or items) the repeats (``*``) of one render may build together
MAX_OUTPUT = 4_000_000  # characters a render may produce
MAX_WIDTH = 10_000  # padding width of center/indent/format specs
_WIDE = re.compile(r"\d{6,}")  # a number of 6+ digits in a format spec or %-format string: a width too large


class TemplateRefused(DslError):
    """A template tried something the sandbox refuses (an escape, or unbounded work)."""


def _refuse(what: str) -> None:
    raise TemplateRefused(f"refused: {what}")


_BUDGET: contextvars.ContextVar[Optional[dict[str, int]]] = contextvars.ContextVar("template_budget", default=None)


def _fresh_budget() -> dict[str, int]:
    return {"left": MAX_RANGE_ITEMS, "built": MAX_VALUE}


def environment(autoescape: bool = False, **options: Any) -> Any:
    """A fresh sandboxed environment (jinja2 imported here: it is a heavy-ish, optional import path)."""
    from jinja2 import StrictUndefined
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "%", "+"])
        code_generator_class = bounded_concat(CodeGenerator)  # every ~ through bounded(): see sdk.template_limits

        def bounded(self, value: Any) -> Any:
            why = too_large(value, "a concatenation")
            return _refuse(why) if why else value

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's
            why = call_problem(__obj, args, kwargs)
            if why:
                _refuse(why)
            out = super().call(__context, __obj, *args, **kwargs)
            why = too_large(out, "a call's result")
            return _refuse(why) if why else out

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "+":
                if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) and \
                        len(left) + len(right) > MAX_VALUE_BUILT:
                    _refuse(f"a + building over {MAX_VALUE_BUILT:,} characters or items")
                return left + right
            if operator == "**":
                if isinstance(left, int) and isinstance(right, int) and \
                        right > 0 and max(abs(left), 2).bit_length() * right > 4096:
                    _refuse(f"{left} ** {right} is too large")
                return left ** right
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        budget = _BUDGET.get() or own
                        budget["built"] -= max(len(seq) * n, 0)
                        if budget["built"] < 0:
                            _refuse(f"repeats building over {MAX_VALUE} items in one render")
                return left * right
            if isinstance(left, str) and _WIDE.search(left):
                _refuse("a %-format width over the limit")
            return left % right

        def wrap_str_format(self, value: Any) -> Any:
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and _WIDE.search(str(value.__self__)):
                _refuse("a format width over the limit")
            return wrapped

    own = _fresh_budget()  # used where no render() set one (an environment used directly)
    env = Sandbox(undefined=options.pop("undefined", StrictUndefined), autoescape=autoescape, **options)

    def bounded_range(*args: int) -> range:
        r = range(*args)
        budget = _BUDGET.get() or own
        budget["left"] -= len(r)
        if budget["left"] < 0:
            _refuse(f"range() over {MAX_RANGE_ITEMS} items in one render")
        return r

    env.globals["range"] = bounded_range
    env.globals.pop("lipsum", None)
    for name in ("center", "indent", "wordwrap", "truncate", "format"):
        env.filters[name] = _capped(env.filters[name])
    for name in ("replace", "join", "indent"):  # checked before they build: see sdk.template_limits
        env.filters[name] = _prechecked(name, env.filters[name])
    return env


def _prechecked(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        why = filter_problem(name, args, kwargs)
        if why:
            _refuse(why)
        return fn(*args, **kwargs)

    if hasattr(fn, "jinja_pass_arg"):
        wrapper.jinja_pass_arg = fn.jinja_pass_arg  # type: ignore[attr-defined]
    return wrapper


def _capped(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str) and fn.__name__ == "do_format" and _WIDE.search(args[0]):
            _refuse("a format width over the limit")
        if any(isinstance(a, int) and not isinstance(a, bool) and a > MAX_WIDTH
               for a in [*args[1:], *kwargs.values()]):
            _refuse(f"a width over {MAX_WIDTH}")
        return fn(*args, **kwargs)

    for attr in ("jinja_pass_arg",):
        if hasattr(fn, attr):
            setattr(wrapper, attr, getattr(fn, attr))
    return wrapper


def render(template: str, where: str, autoescape: bool = False, **variables: Any) -> str:
    """``template`` rendered with ``variables`` in the sandbox; any failure is a DslError that starts with
    ``where`` (e.g. ``rag.docs: the prompt template``) and says what jinja refused, never a traceback."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    token = _BUDGET.set(_fresh_budget())  # each render has its own budget (threads and async tasks apart)
    try:
        variables = {k: _counted(v) for k, v in variables.items()}
        tpl = _compiled(template, autoescape)
        out: list[str] = []
        size = 0
        for piece in tpl.generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT:
                _refuse(f"output over {MAX_OUTPUT} characters")
            out.append(piece)
        return "".join(out)
    except TemplateRefused as e:
        raise TemplateRefused(f"{where} is refused: {str(e).removeprefix('refused: ')}") from None
    except SecurityError as e:
        raise TemplateRefused(f"{where} is refused by the sandbox: {e}") from None
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as e:  # RecursionError: a macro calling itself, or expressions nested too deep
        raise DslError(f"{where} cannot be rendered ({type(e).__name__}: {e})") from None
    finally:
        _BUDGET.reset(token)


def _spend(n: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget["left"] -= n
        if budget["left"] < 0:
            _refuse(f"loops over more than {MAX_RANGE_ITEMS} items in one render")


class _CountedList(list):  # type: ignore[type-arg]
    """A list whose every iteration spends the render's item budget (one item at a time)."""

    def __iter__(self) -> Any:
        for item in super().__iter__():
            _spend(1)
            yield item


class _CountedStr(str):
    """A string whose iteration (``{% for c in text %}``, ``text|list``) spends the render's item budget."""

    def __iter__(self) -> Any:
        for ch in super().__iter__():
            _spend(1)
            yield ch


def _counted(value: Any, depth: int = 0) -> Any:
    """``value`` with its lists, tuples and strings (also inside dicts and lists, 4 levels deep) made to spend the
    render's budget when a template loops over them; other objects pass as they are."""
    if depth > 4:
        return value
    if isinstance(value, str) and not isinstance(value, _CountedStr):
        return _CountedStr(value) if len(value) > 64 else value
    if isinstance(value, (list, tuple)) and not isinstance(value, _CountedList):
        return _CountedList(_counted(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _counted(v, depth + 1) for k, v in value.items()}
    return value


@functools.lru_cache(maxsize=64)
def _compiled(template: str, autoescape: bool) -> Any:
    """A template compiled once (an eval renders its prompt for every item)."""
    return environment(autoescape=autoescape).from_string(template)


# ------------------------------------------------------------------------------------------- the static check

_DUNDER = re.compile(r"__[A-Za-z]")  # the start of a dunder name, e.g. '__cla' ~ 'ss__'
_DANGER = re.compile(r"__\w+__|\bmro\b|\bfunc_globals\b|\bf_globals\b|\bgi_frame\b|\bcr_frame\b")


def problem(template: str) -> Optional[str]:
    """Why a template is refused before it runs (an escape payload or unbounded work), or None. Templates that do
    not parse are not refused here: nothing renders them (they fail, with jinja's message, where they are used)."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.exceptions import SecurityError

    env, chat = environment(), False
    try:
        tree = env.parse(template)
    except TemplateSyntaxError:
        try:  # a chat template: {% generation %} markers, loop controls
            env, chat = chat_environment(), True
            tree = env.parse(template)
        except TemplateSyntaxError:
            return None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Const, nodes.Name, nodes.Filter, nodes.Call)):
        for text in _names_in(node):
            if _DANGER.search(text) or text.startswith("_"):
                return f"it reaches for {text!r}, an internal attribute; templates may only read their variables"
    from jinja2 import ChainableUndefined

    dry = chat_environment(ChainableUndefined) if chat else environment(undefined=ChainableUndefined)
    try:
        out = 0
        for piece in dry.from_string(template).generate():
            out += len(piece)
            if out > MAX_OUTPUT:
                return f"it writes over {MAX_OUTPUT} characters"
    except TemplateRefused as e:
        return f"it asks for unbounded work ({str(e).removeprefix('refused: ')})"
    except SecurityError as e:
        return f"the sandbox refuses it ({e})"
    except Exception:  # noqa: BLE001 - a dry run with placeholder variables may fail for ordinary reasons
        return None
    return None


def _names_in(node: Any) -> list[str]:
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr):
        return [node.attr]
    if isinstance(node, (nodes.Name,)):
        return [node.name]
    if isinstance(node, nodes.Const) and isinstance(node.value, str):  # a string may hold "_" (a separator line)
        return [node.value] if (_DUNDER.search(node.value) or _DANGER.search(node.value)) else []
    if isinstance(node, nodes.Filter) and node.name == "attr":
        return [a.value for a in node.args if isinstance(a, nodes.Const) and isinstance(a.value, str)]
    return []


# ------------------------------------------------------------------------------------------- chat templates

def chat_environment(undefined: Any = None) -> Any:
    """The sandbox set up as transformers sets up chat templates (``trim_blocks``, ``lstrip_blocks``, loop
    controls, ``{% generation %}`` markers, ``raise_exception``, ``strftime_now``, a ``tojson`` that keeps
    non-ASCII, lenient undefined values), with this module's budgets: a template from a shared model folder or
    recipe renders the same text as transformers gives it, but cannot loop forever or build huge values."""
    import datetime
    import json

    from jinja2 import TemplateError, Undefined, nodes
    from jinja2.ext import Extension

    class Generation(Extension):  # transformers' AssistantTracker, minus the tracking: the body renders as is
        tags = frozenset({"generation"})

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = environment(undefined=undefined or Undefined, trim_blocks=True, lstrip_blocks=True,
                      extensions=[Generation, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _capped(tojson)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


@functools.lru_cache(maxsize=32)
def _chat_compiled(template: str) -> Any:
    return chat_environment().from_string(template)


def render_chat(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                where: str = "the chat template", **extra: Any) -> str:
    """``messages`` formatted by the chat ``template`` in the sandbox, under the same budgets as :func:`render`
    (items looped over, values built, output size); ``extra`` are the other variables transformers passes
    (``bos_token``, ``eos_token``, ``tools``...). A refused or failing template is a DslError naming ``where``."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    token = _BUDGET.set(_fresh_budget())
    try:
        variables = {k: _counted(v) for k, v in extra.items()}
        tpl = _chat_compiled(template)
        out: list[str] = []
        size = 0
        for piece in tpl.generate(messages=_counted(messages), add_generation_prompt=add_generation_prompt,
                                  **variables):
            size += len(piece)
            if size > MAX_OUTPUT:
                _refuse(f"output over {MAX_OUTPUT} characters")
            out.append(piece)
        return "".join(out)
    except TemplateRefused as e:
        raise TemplateRefused(f"{where} is refused: {str(e).removeprefix('refused: ')}") from None
    except SecurityError as e:
        raise TemplateRefused(f"{where} is refused by the sandbox: {e}") from None
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as e:
        raise DslError(f"{where} cannot be rendered ({type(e).__name__}: {e})") from None
    finally:
        _BUDGET.reset(token)


CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # transformers' marker of the message a continuation extends


def tokenizer_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                   where: str = "the model's chat template", continue_final_message: bool = False,
                   **kwargs: Any) -> str:
    """What ``tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)`` gives, rendered by
    :func:`render_chat`: the variables transformers passes (the tokenizer's special tokens, ``tools`` and
    ``documents`` as None, ``kwargs`` over them; reasoning fields aliased), and with ``continue_final_message``
    the last message left open as transformers leaves it (TRL's ORPO and CPO render a prompt that ends with an
    assistant turn so)."""
    extra = {**dict(getattr(tokenizer, "special_tokens_map", {}) or {}), "tools": None, "documents": None, **kwargs}
    messages = _aliased(messages)
    if continue_final_message and messages and isinstance(messages[-1].get("content"), str):
        final = messages[-1]["content"]
        messages = [*messages[:-1], {**messages[-1], "content": final + CONTINUE_TAG}]
        text = render_chat(tokenizer.chat_template, messages, add_generation_prompt, where=where, **extra)
        at = text.rfind(CONTINUE_TAG.strip())
        if at < 0 or final.strip() not in text:
            raise DslError(f"{where} cannot be rendered (ValueError: the final message to continue does not "
                           "appear in the rendered chat)")
        return text[:at] if text[at:at + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:at].rstrip()
    return render_chat(tokenizer.chat_template, messages, add_generation_prompt, where=where, **extra)


def _aliased(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as transformers hands them to a template: a reasoning text (``reasoning_content``,
    ``thinking`` or ``reasoning``) also under ``thinking`` and ``reasoning_content``."""
    out = []
    for m in messages:
        if isinstance(m, dict):
            reasoning = next((m[k] for k in ("reasoning_content", "thinking", "reasoning") if m.get(k) is not None),
                             None)
            if reasoning is not None:
                m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out
