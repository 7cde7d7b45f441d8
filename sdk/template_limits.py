"""What one template may build, checked BEFORE it is built: the sandbox (:mod:`sdk.templating`) asks these
pure functions about every call a template makes (``x.replace(a, b)``, ``x.ljust(n)``, ``"".join(xs)``), every
``+`` and every filter that can multiply its input (``replace``, ``join``, ``indent``), and bounds every ``~``
concatenation, so a template cannot build a value larger than a render's whole output may be: ``x|replace('a', x)``
twice over a 3,000-character value (27 G characters) or ``~`` doubling a string thirty times (2 G characters) is a
refusal, not a MemoryError or a machine out of memory. Standard library only."""

from __future__ import annotations

from typing import Any, Iterable, Optional

MAX_VALUE = 4_000_000  # characters (or items) one value a template builds may hold: the size of a whole output
MAX_WIDTH = 10_000  # a padding width (ljust, rjust, center, zfill, expandtabs, indent)
_PADDING = ("ljust", "rjust", "center", "zfill", "expandtabs")


def too_large(value: Any, what: str = "a value") -> Optional[str]:
    """Why ``value`` (a string, list or tuple a template built) is refused, or None."""
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_VALUE:
        return f"{what} of {len(value):,} characters or items, over {MAX_VALUE:,}"
    return None


def _replaced(text: str, old: Any, new: Any, count: Any = -1) -> Optional[str]:
    if not isinstance(old, str) or not isinstance(new, str):
        return None
    hits = (len(text) + 1) if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    size = len(text) + hits * (len(new) - len(old))
    return None if size <= MAX_VALUE else f"a replace building {size:,} characters, over {MAX_VALUE:,}"


def _joined(items: Iterable[Any], sep: Any) -> Optional[str]:
    if not isinstance(items, (list, tuple)):  # a generator is not consumed here; its result is checked after
        return None
    size = sum(len(x) for x in items if isinstance(x, str)) + len(items) * (len(sep) if isinstance(sep, str) else 0)
    return None if size <= MAX_VALUE else f"a join building {size:,} characters, over {MAX_VALUE:,}"


def call_problem(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[str]:
    """Why a method call on a string is refused before it runs (``replace`` or ``join`` building a huge value, a
    padding width over :data:`MAX_WIDTH`), or None."""
    owner, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
    if not isinstance(owner, str):
        return None
    if name in _PADDING and any(isinstance(a, int) and a > MAX_WIDTH for a in (*args, *kwargs.values())):
        return f"a width over {MAX_WIDTH:,}"
    if name == "expandtabs":
        size = owner.count("\t") * (args[0] if args and isinstance(args[0], int) else 8)
        return None if size <= MAX_VALUE else f"expandtabs building {size:,} characters"
    if name == "replace" and len(args) >= 2:
        return _replaced(owner, *args[:3])
    if name == "join" and args:
        return _joined(args[0], owner)
    return None


def filter_problem(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[str]:
    """Why a ``replace``, ``join`` or ``indent`` filter is refused before it runs, or None (``args[0]`` is the
    value filtered; ``join`` is given the evaluation context first)."""
    if name == "replace":  # (eval_ctx, s, old, new, count=None)
        text = args[1] if len(args) > 1 else None
        if isinstance(text, str) and len(args) >= 4:
            return _replaced(text, args[2], args[3], args[4] if len(args) > 4 and args[4] is not None else -1)
    if name == "join":  # (eval_ctx, value, d="", attribute=None)
        value = args[1] if len(args) > 1 else None
        if isinstance(value, (list, tuple, str)):
            return _joined(value, args[2] if len(args) > 2 else kwargs.get("d", ""))
    if name == "indent" and args and isinstance(args[0], str):
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        size = len(args[0]) + (args[0].count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))
        return None if size <= MAX_VALUE else f"an indent building {size:,} characters"
    return None


def bounded_concat(code_generator: type) -> type:
    """A jinja2 code generator whose ``~`` concatenations pass their result through ``environment.bounded``."""

    class Bounded(code_generator):  # type: ignore[misc, valid-type]
        def visit_Concat(self, node: Any, frame: Any) -> None:
            self.write("environment.bounded(")
            super().visit_Concat(node, frame)
            self.write(")")

    return Bounded
