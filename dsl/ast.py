"""The recipe's syntax tree: blocks, attributes and values, each with its source span and comments.

The parser builds it from text; the formatter prints it back (comments kept); ``dsl.parser`` turns it into the
plain dict that ``sdk.spec.Spec`` validates, with a map from spec paths to spans for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from sdk.errors import Span


@dataclass
class Value:
    """A literal or compound value. ``kind``: string | number | bool | name | list | object | tagged | call | expr."""

    kind: str
    value: Any  # str | float | int | bool | list[Value] | list[Pair] | (tag, list[Pair]) | (fn, list[Value]) | expr node
    span: Span
    raw: Optional[str] = None  # original text of numbers and strings (long strings keep their form)


@dataclass
class Pair:
    key: str
    value: Value
    span: Span  # of the key


@dataclass
class Attribute:
    name: str
    value: Value
    span: Span  # of the name
    comments: list[str] = field(default_factory=list)  # leading comment lines
    trailing: Optional[str] = None  # comment after the value on the same line
    blank_before: bool = False
    end_line: int = 0
    end_col: int = 0


@dataclass
class Block:
    kind: str
    label: Optional[str]
    items: list[Union["Attribute", "Block"]]
    span: Span  # of the kind keyword
    label_span: Optional[Span] = None
    comments: list[str] = field(default_factory=list)
    trailing: Optional[str] = None
    inner_trailing: list[str] = field(default_factory=list)  # comments before the closing brace
    closing_trailing: Optional[str] = None  # comment after the closing brace of a block of several lines
    blank_before: bool = False
    end_line: int = 0
    end_col: int = 0


@dataclass
class Document:
    path: str
    extends: list[tuple[str, Span]]
    items: list[Union[Attribute, Block]]
    header_comments: list[str] = field(default_factory=list)
    footer_comments: list[str] = field(default_factory=list)
    footer_blank: bool = False  # a blank line above the footer comments
