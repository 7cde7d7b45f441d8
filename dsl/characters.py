"""Hints for characters the recipe language does not take: look-alike Unicode letters (named, with their code
point and the ASCII spelling), typographic quotes and dashes, 'single quotes', `//` comments, `30%`, and hyphens
inside names. Used by ``dsl.syntax_errors`` for a lexer error; each returns ``(message, hint)`` or None.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Optional

# Letters that look like ASCII ones (from Unicode's confusables.txt, the Cyrillic and Greek letters that a keyboard
# layout or a copy from a document slips into a name). Accented and full-width letters are found by NFKD instead.
_LOOKALIKES = dict(zip(
    "аеорсухіјѕԁһԛԝӏ" "АВЕКМНОРСТХІЈЅҮԌԜ" "οαικνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhqwl" "ABEKMHOPCTXIJSYGW" "oaikvptuxABEZHIKMNOPTYX"))
_PUNCTUATION = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2018": "'",
                "\u2019": "'", "\u2032": "'", "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00d7": "*",
                "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
                "\u200b": "", "\u2060": "", "\ufeff": ""}
_NAME_CHAR = re.compile(r"[\w.\-]", re.UNICODE)


def ascii_lookalike(ch: str) -> Optional[str]:
    """The ASCII text that ``ch`` looks like, or None."""
    if ch in _LOOKALIKES:
        return _LOOKALIKES[ch]
    if ch in _PUNCTUATION:
        return _PUNCTUATION[ch]
    plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return plain if plain and plain.isascii() and plain.isprintable() else None


def _word_at(text: str, pos: int) -> tuple[int, int]:
    start, end = pos, pos + 1
    while start > 0 and _NAME_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _NAME_CHAR.match(text[end]):
        end += 1
    return start, end


def _asciified(word: str) -> str:
    return "".join(c if c.isascii() else (ascii_lookalike(c) or c) for c in word)


def unicode_hint(text: str, pos: int) -> Optional[tuple[str, str]]:
    """A non-ASCII character at ``pos``: what it is (its Unicode name and code point) and what to write."""
    ch = text[pos]
    if ch.isascii():
        return None
    name = unicodedata.name(ch, "an unnamed character")
    what = f"{name} (U+{ord(ch):04X})"
    look = ascii_lookalike(ch)
    if look is None:
        return (f"unexpected character {ch!r}: {what}",
                "names, keywords and operators are plain ASCII; other text belongs inside a string \"...\"")
    if look in ("", " "):
        return (f"unexpected character {ch!r}: {what}", "replace it with a plain space" if look else "delete it")
    shown = f"looks like {look!r}"
    if look.replace("_", "a").isalnum():
        start, end = _word_at(text, pos)
        word = text[start:end]
        fixed = _asciified(word)
        if fixed.isascii() and fixed != word:
            return f"unexpected character {ch!r}: {what} {shown}", f"write {fixed} in plain ASCII letters"
        return f"unexpected character {ch!r}: {what} {shown}", f"write {look!r} instead"
    if look in ('"', "'"):
        m = re.match(r"[\u201c\u201d\u201e\u00ab\u00bb\u2018\u2019'\"]([^\n\u201c\u201d\u201e\u00ab\u00bb\u2018\u2019'\"]*)"
                     r"[\u201c\u201d\u201e\u00ab\u00bb\u2018\u2019'\"]", text[pos:])
        return (f"unexpected character {ch!r}: {what} {shown}",
                f'strings use plain double quotes: write "{m.group(1)}"' if m else 'strings use plain double quotes "')
    return f"unexpected character {ch!r}: {what} {shown}", f"write {look} instead"


def ascii_hint(text: str, pos: int) -> Optional[str]:
    """Hints for ASCII characters that other formats use: 'single quotes', // comments, 30%."""
    ch = text[pos]
    if ch == "'":
        m = re.match(r"'([^'\n]*)'", text[pos:])
        return f'strings use double quotes: write "{m.group(1)}"' if m else "strings use double quotes"
    if ch == "`":
        m = re.match(r"`([^`\n]*)`", text[pos:])
        return f'strings use double quotes: write "{m.group(1)}"' if m else "strings use double quotes"
    if ch == "~":
        return "an unset value is written null (YAML's ~ is not a value here)"
    if text.startswith("//", pos) or text.startswith("/*", pos) or re.match(r"--(\s|$)", text[pos:]):
        rest = text[pos + 2:].split("\n", 1)[0].strip().removesuffix("*/").strip()
        shown = f"# {rest}" if rest and len(rest) <= 40 else "# ..."
        return f"comments start with # and run to the end of the line: write {shown}"
    if ch == "%":
        m = re.search(r"(\d[\d_]*(?:\.\d[\d_]*)?)\s*$", text[:pos])
        if m:
            try:
                fraction = Decimal(m.group(1).replace("_", "")) / 100
            except InvalidOperation:  # pragma: no cover - the regex admits only decimals
                return None
            shown = format(fraction.normalize(), "f")
            return f"a share is written as a fraction: write {shown} for {m.group(1)}%"
        return "a share is written as a fraction between 0 and 1, without %"
    return None


def hyphen_hint(text: str, pos: int) -> Optional[str]:
    """A '-' between two name characters (``rag my-docs``, ``top-k = 3``): names use ``_``."""
    if not (0 < pos < len(text) - 1 and text[pos] == "-"):
        return None
    if not (re.match(r"[A-Za-z0-9_]", text[pos - 1]) and re.match(r"[A-Za-z0-9_]", text[pos + 1])):
        return None
    start, end = _word_at(text, pos)
    word = text[start:end]
    if not re.match(r"[A-Za-z_]", word):
        return None
    attr = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*$", text[max(0, start - 200):start])
    if attr is not None:
        from dsl.redact import secret_names

        if attr.group(1) in secret_names():  # never echo (a part of) a secret value
            return "names are letters, digits and _, not -; a secret is written as a string or env(\"NAME\")"
    return f"names are letters, digits and _, not -: write {word.replace('-', '_')}"
