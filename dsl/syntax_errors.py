"""Syntax errors: located messages with hints for habits from other formats, and brace errors that name the brace
that is wrong, guessed from the indentation the author wrote (as the Python and Rust compilers do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dsl.characters import ascii_hint, hyphen_hint, unicode_hint
from sdk.errors import Diagnostic, Span, SpecError

MAX_DEPTH = 64
TOKEN_NAMES = {
    "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'",
    "EQUAL": "'='", "COMMA": "','", "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string",
    "NUMBER": "a number", "TRUE": "true", "FALSE": "false", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*'", "MINUS": "'-'", "EXTENDS": "extends", "$END": "end of file", "_OR": "or", "_AND": "and",
    "_NOT": "not",
}
PAIRS = {"{": "}", "[": "]", "(": ")"}
CLOSERS = {v: k for k, v in PAIRS.items()}


class ParseError(SpecError):
    pass


@dataclass
class _Bracket:
    char: str
    line: int
    col: int
    indent: int  # indentation of the line it is on
    first: bool  # first thing on its line


def brackets(text: str) -> list[_Bracket]:
    """Every bracket of the text in order, strings and comments skipped."""
    out: list[_Bracket] = []
    line, col, i, indent, first = 1, 1, 0, 0, True
    while i < len(text):
        c = text[i]
        if text.startswith('"""', i):
            j = text.find('"""', i + 3)
            seg = text[i:(j + 3 if j >= 0 else len(text))]
        elif c == '"':
            m = re.match(r'"([^"\\\n]|\\.)*"?', text[i:])
            seg = m.group(0) if m else c
        elif c == "#":
            j = text.find("\n", i)
            seg = text[i:(j if j >= 0 else len(text))]
        else:
            seg = c
            if c in "{[()]}":
                out.append(_Bracket(c, line, col, indent, first))
        for ch in seg:
            if ch == "\n":
                line, col, indent, first = line + 1, 1, 0, True
            else:
                if first and ch in " \t":
                    indent += 1
                elif first:
                    first = False
                col += 1
        i += len(seg)
    return out


def check_depth(text: str, path: str) -> None:
    depth = 0
    for b in brackets(text):
        depth += 1 if b.char in PAIRS else -1
        if depth > MAX_DEPTH:
            msg = f"nesting deeper than {MAX_DEPTH} brackets"
            raise ParseError(msg, [Diagnostic(msg, Span(path, b.line, b.col, b.col + 1),
                                              "a recipe never needs this much nesting: close the brackets sooner")],
                             {path: text})


def _diag(path: str, b: _Bracket, msg: str, hint: Optional[str] = None, severity: str = "error") -> Diagnostic:
    return Diagnostic(msg, Span(path, b.line, b.col, b.col + 1), hint, severity)


def brace_errors(text: str, path: str) -> Optional[list[Diagnostic]]:
    """The brace that is wrong, when the brackets do not balance: a closing brace whose indentation matches an
    opening brace further out means the ones in between were never closed; a closing brace on its own line that
    lines up with no open brace closes nothing. The matching brace comes as a note."""
    found = brackets(text)
    stack: list[_Bracket] = []
    closed: list[tuple[_Bracket, _Bracket]] = []
    for b in found:
        if b.char in PAIRS:
            stack.append(b)
            continue
        if not stack:
            return [_diag(path, b, f"this '{b.char}' closes nothing", "delete it, or open its block before it")]
        top = stack[-1]
        if b.first and b.indent != top.indent:
            same = [o for o in stack if o.indent == b.indent and PAIRS[o.char] == b.char]
            if same and same[-1] is not top:
                opener = stack[stack.index(same[-1]) + 1]
                return [_diag(path, opener, f"this '{opener.char}' is never closed",
                              f"close it with '{PAIRS[opener.char]}' before line {b.line}"),
                        _diag(path, b, f"this '{b.char}' lines up with the '{same[-1].char}' at line "
                                       f"{same[-1].line}, so it closes that one", severity="note")]
            if not same and 2 * sum(o.char in PAIRS for o in found) < len(found):
                prev = next((p for p in reversed(closed) if p[0].indent == b.indent), None)
                diags = [_diag(path, b, f"this '{b.char}' closes nothing", "delete it")]
                if prev is not None:
                    diags.append(_diag(path, prev[1], f"the '{prev[0].char}' at line {prev[0].line} that lines up "
                                                      f"with it is already closed here", severity="note"))
                return diags
        if PAIRS[top.char] != b.char:
            return [_diag(path, b, f"this '{b.char}' does not match the '{top.char}' at line {top.line}",
                          f"close the '{top.char}' with '{PAIRS[top.char]}' first"),
                    _diag(path, top, f"the '{top.char}' it meets is opened here", severity="note")]
        closed.append((stack.pop(), b))
    if stack:
        top = stack[-1]
        return [_diag(path, top, f"this '{top.char}' is never closed",
                      f"add '{PAIRS[top.char]}' where its block ends")]
    return None


def _habit_hint(text: str, pos: int, found: str, expected: list[str]) -> Optional[str]:
    """Hints for habits from YAML, JSON, HCL and Python."""
    rest = text[pos:pos + 2]
    before = text[:pos].rstrip()
    if rest == "=>":
        return "did you mean >=? (a comparison is written >=, <=, ==, !=, < or >)"
    if rest == "=<":
        return "did you mean <=?"
    if rest == "--" and text[pos + 2:pos + 3] in (" ", "\t", "\n", ""):  # an SQL/Lua comment
        return ascii_hint(text, pos)
    if rest in ("&&", "||"):
        return f"did you mean {'and' if rest == '&&' else 'or'}?"
    if found == "'!'":
        return "did you mean not?"
    if found in ("':'", "':='") and re.search(r"[A-Za-z_0-9\"]$", before):
        return "an attribute is written NAME = VALUE, not NAME: VALUE"
    if found == "';'":
        return "no semicolons: put attributes on their own lines or separate them with spaces"
    if found == "','" and "'='" not in expected and ("a name" in expected or "'}'" in expected):
        return "attributes are separated by newlines or spaces; commas only separate list items and object members"
    if found == "'='" and before.endswith("="):
        return "a comparison is written =="
    if found == "'='":
        return "did you mean ==? (a comparison is written ==)"
    if found.startswith("'\"") and re.match(r'"[^"\n]*"\s*[:=]', text[pos:]):
        return "attribute names are not quoted: write NAME = VALUE"
    if found in ("'\\''", "'\\\\'"):
        return "strings use double quotes"
    return None


def syntax_error(e: UnexpectedInput, text: str, path: str) -> ParseError:
    found_brackets = brackets(text)
    opens = sum(b.char in PAIRS for b in found_brackets)
    if opens * 2 != len(found_brackets) or isinstance(e, UnexpectedEOF) \
            or getattr(getattr(e, "token", None), "type", "") == "$END":
        braces = brace_errors(text, path)
        if braces:
            return ParseError(braces[0].message, braces, {path: text})
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    pos = getattr(e, "pos_in_stream", None) or 0
    hint: Optional[str] = None
    if isinstance(e, UnexpectedCharacters):
        if text[pos:pos + 1] == "." and pos + 1 < len(text) and not text[pos + 1].isascii():
            pos, col = pos + 1, col + 1  # `corpus.аrchive`: the letter is at fault, not the dot before it
        ch = text[pos] if pos < len(text) else ""
        msg = f"unexpected character {ch!r}"
        if ch == '"':
            msg, hint = "unterminated string", "close the string with \" on the same line, or use \"\"\"...\"\"\""
        elif ch and not ch.isascii():
            msg, hint = unicode_hint(text, pos) or (msg, None)
        else:
            hint = ascii_hint(text, pos) or _habit_hint(text, pos, repr(ch), [])
    elif isinstance(e, (UnexpectedToken, UnexpectedEOF)):
        tok = getattr(e, "token", None)
        expected = sorted({TOKEN_NAMES.get(t, t) for t in (getattr(e, "expected", None) or [])})
        found = "end of file" if tok is None or tok.type == "$END" else repr(tok.value)
        msg = f"unexpected {found}"
        if expected:
            msg += f", expected {', '.join(expected[:6])}{' or more' if len(expected) > 6 else ''}"
        if tok is None or tok.type == "$END":
            lines = text.rstrip().split("\n")
            line, col = len(lines), len(lines[-1]) + 1
            if not text.strip():
                msg, hint = "the recipe is empty", "write `domain NAME { ... }` with the blocks inside"
                line, col = 1, 1
        else:
            pos = tok.start_pos or 0
            hint = _habit_hint(text, pos, found, expected) or hyphen_hint(text, pos)
            if hint is None and tok.type == "NAME" and "'='" in expected:
                hint = "an attribute is written NAME = VALUE"
    else:  # pragma: no cover
        msg = str(e).splitlines()[0]
    return ParseError(msg, [Diagnostic(msg, Span(path, line, col, col + 1), hint)], {path: text})
