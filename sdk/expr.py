"""The small expression language of gates and route thresholds.

Grammar (lowest precedence first)::

    expr   := or
    or     := and ("or" and)*
    and    := not ("and" not)*
    not    := "not" not | cmp
    cmp    := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum    := prod (("+" | "-") prod)*
    prod   := unary ("*" unary)*
    unary  := "-" unary | atom
    atom   := NUMBER | "true" | "false" | metric | "(" expr ")"
    metric := NAME "." NAME "." NAME ("." NAME)?     e.g. finetune.sip.exact_match, rag.docs.accuracy.ci_low

The DSL parser builds the same nodes from its own grammar; strings given to the Python builder are parsed here.
Expressions are values in the spec: they print back to canonical text with :func:`to_text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

CMP_OPS = ("<=", ">=", "==", "!=", "<", ">")
# value, the ends of its confidence interval, and the paired-bootstrap p-value of its difference from the first
# system of its eval (so `rag.tuned.exact_match > finetune.sip.exact_match and finetune.sip.exact_match.p_value <
# 0.05`, with rag.tuned first, says rag.tuned is better, significantly)
BOUNDS = ("value", "ci_low", "ci_high", "p_value")


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Metric:
    kind: str
    label: str
    metric: str
    bound: str = "value"

    @property
    def system(self) -> str:
        return f"{self.kind}.{self.label}"

    def __str__(self) -> str:
        tail = "" if self.bound == "value" else f".{self.bound}"
        return f"{self.kind}.{self.label}.{self.metric}{tail}"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class Neg:
    operand: "Node"


Node = Union[Num, Bool, Metric, BinOp, Not, Neg]

_PREC = {"or": 1, "and": 2, **{op: 4 for op in CMP_OPS}, "+": 5, "-": 5, "*": 6}


class ExprSyntaxError(ValueError):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|\(|\))"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprSyntaxError(f"unexpected character {text[pos:].lstrip()[:1]!r} in expression", pos)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


def parse(text: str) -> Node:
    """Parse expression text into nodes; raises ExprSyntaxError with a character offset."""
    toks = _tokens(text)
    i = 0

    def peek() -> tuple[str, str, int]:
        return toks[i]

    def take() -> tuple[str, str, int]:
        nonlocal i
        tok = toks[i]
        i += 1
        return tok

    def atom() -> Node:
        kind, val, pos = take()
        if kind == "num":
            return Num(float(val.replace("_", "")))
        if kind == "op" and val == "(":
            node = binary(0)
            k2, v2, p2 = take()
            if v2 != ")":
                raise ExprSyntaxError("expected ')'", p2)
            return node
        if kind == "op" and val == "-":
            inner = atom()
            return Num(-inner.value) if isinstance(inner, Num) else Neg(inner)
        if kind == "name":
            if val == "true":
                return Bool(True)
            if val == "false":
                return Bool(False)
            if val == "not":
                return Not(binary(3))
            return metric_from_name(val, pos)
        raise ExprSyntaxError(f"expected a number or a metric reference, found {val or 'end of expression'!r}", pos)

    def binary(min_prec: int) -> Node:
        left = atom()
        while True:
            kind, val, pos = peek()
            op = val if kind in ("op", "name") else None
            prec = _PREC.get(op or "")
            if prec is None or prec <= min_prec:
                break
            take()
            right = binary(prec)
            left = BinOp(op, left, right)  # type: ignore[arg-type]
        return left

    node = binary(0)
    kind, val, pos = peek()
    if kind != "end":
        raise ExprSyntaxError(f"unexpected {val!r} in expression", pos)
    return node


def metric_from_name(name: str, pos: int = 0) -> Metric:
    parts = name.split(".")
    if len(parts) == 4 and parts[3] in BOUNDS:
        return Metric(parts[0], parts[1], parts[2], parts[3])
    if len(parts) == 3:
        return Metric(parts[0], parts[1], parts[2])
    raise ExprSyntaxError(
        f"{name!r} is not a metric reference: write KIND.LABEL.METRIC (e.g. finetune.sip.exact_match),"
        f" optionally followed by .ci_low, .ci_high or .p_value",
        pos,
    )


def to_text(node: Node, parent_prec: int = 0) -> str:
    """Canonical text; parse(to_text(n)) == n."""
    if isinstance(node, Num):
        v = node.value
        return repr(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, Metric):
        return str(node)
    if isinstance(node, Neg):
        return "-" + to_text(node.operand, 7)
    if isinstance(node, Not):
        text = "not " + to_text(node.operand, 3)
        return f"({text})" if parent_prec > 3 else text
    prec = _PREC[node.op]
    # left-associative: the right operand needs parentheses at equal precedence
    text = f"{to_text(node.left, prec - 1)} {node.op} {to_text(node.right, prec)}"
    if node.op in CMP_OPS:
        text = f"{to_text(node.left, prec)} {node.op} {to_text(node.right, prec)}"
    return f"({text})" if prec <= parent_prec else text


def metrics(node: Node) -> list[Metric]:
    if isinstance(node, Metric):
        return [node]
    if isinstance(node, BinOp):
        return metrics(node.left) + metrics(node.right)
    if isinstance(node, (Not, Neg)):
        return metrics(node.operand)
    return []


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "and": lambda a, b: bool(a) and bool(b),
    "or": lambda a, b: bool(a) or bool(b),
}


def evaluate(node: Node, lookup: Callable[[Metric], float]) -> Any:
    """Evaluate with ``lookup`` giving each metric's value (a KeyError names a missing one)."""
    if isinstance(node, (Num, Bool)):
        return node.value
    if isinstance(node, Metric):
        return lookup(node)
    if isinstance(node, Neg):
        return -evaluate(node.operand, lookup)
    if isinstance(node, Not):
        return not evaluate(node.operand, lookup)
    return _OPS[node.op](evaluate(node.left, lookup), evaluate(node.right, lookup))


def margin(node: Node, lookup: Callable[[Metric], float]) -> float | None:
    """How far a comparison is from flipping (left - right for >=/>, right - left for <=/<)."""
    if isinstance(node, BinOp) and node.op in ("<", "<=", ">", ">="):
        left, right = evaluate(node.left, lookup), evaluate(node.right, lookup)
        return float(left - right) if node.op in (">", ">=") else float(right - left)
    return None
