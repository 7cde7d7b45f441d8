"""Text features shared by the synth filters: a row's text, content words and shingles, and MinHash signatures.

Normalisation is the evaluation metrics' (``sdk.metrics.normalize``: lower case, no punctuation, no articles),
then stop words go and a light suffix stemmer folds ``uses``/``used``/``using`` into one word, so two texts
that say the same thing in another word order, tense or number share their content words. Pure Python;
datasketch (and numpy under it) is imported on first use."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sdk.metrics import normalize

NUM_PERM = 128

_STOP = """
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either etc few following for from further had has have
having he her here hers him his how however i if in into is it its itself just least like may me might more most
much must my neither no nor not of off on once one only or other our ours out over own per same shall she should
so some such than that the their theirs them then there these they this those through thus to too under until up
upon us very via was we were what when where whether which while who whom whose why will with within without would
yet you your
"""
STOP_WORDS = frozenset(_STOP.split())

_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*$")
_SUFFIXES = (("ations", ""), ("ation", ""), ("ings", ""), ("ing", ""), ("ies", "y"), ("ied", "y"), ("es", ""),
             ("ed", ""), ("s", ""))


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A light suffix stemmer: ``networks``/``networking`` -> ``network``, ``supplies``/``supplied`` ->
    ``supply``; numbers and short words are kept whole. Both sides of a comparison go through it, so only its
    consistency matters."""
    if len(word) <= 4 or _NUMBER.match(word):
        return word
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + repl
    return word


_DROP_PUNCT = str.maketrans("-/", "  ", string.punctuation.replace("-", "").replace("/", ""))


def content_words(text: str) -> list[str]:
    """The text's normalised, stemmed words without stop words, in order (repeats kept): lower case, no
    punctuation, as ``sdk.metrics.normalize`` (articles are stop words), except that a hyphen or a slash
    separates words (``Multiple-Input`` is ``multiple input``)."""
    return [stem(w) for w in text.lower().translate(_DROP_PUNCT).split() if w not in STOP_WORDS]


def is_number(word: str) -> bool:
    return bool(_NUMBER.match(word))


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-shingles of the normalised text (the words themselves when it has fewer than k)."""
    words = normalize(text).split()
    if len(words) < k:
        return set(words)
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages
        return "\n".join(m.get("content", "") for m in value
                         if isinstance(m, dict) and m.get("role") != "system" and isinstance(m.get("content"), str))
    return ""


def question_of(row: dict[str, Any]) -> str:
    """The row's question: ``question`` (qa, raft, eval) or ``prompt`` (preference); else its user turns."""
    for key in ("question", "prompt"):
        if isinstance(row.get(key), str):
            return str(row[key])
    msgs = row.get("messages")
    if isinstance(msgs, list):
        return _content([m for m in msgs if isinstance(m, dict) and m.get("role") == "user"])
    return ""


def answer_of(row: dict[str, Any]) -> str:
    """The row's answer: ``answer`` (qa, raft, eval) or ``chosen`` (preference); else its assistant turns."""
    for key in ("answer", "chosen"):
        if key in row:
            return _content(row[key])
    msgs = row.get("messages")
    if isinstance(msgs, list):
        return _content([m for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"])
    return ""


def row_text(row: dict[str, Any]) -> str:
    """What a row teaches: its question and its answer (never the chunk: the corpus is not training text)."""
    return "\n".join(t for t in (question_of(row), answer_of(row)) if t)


def minhashes(sets: Iterable[Iterable[str]]) -> list[Any]:
    """One MinHash per set of strings (datasketch's batched update)."""
    from datasketch import MinHash

    return MinHash.bulk(([s.encode("utf-8") for s in items] for items in sets), num_perm=NUM_PERM, seed=1)


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0
