"""Random mutations of every recipe (deleted braces, swapped tokens, misspelled names, wrong types, junk; byte-level
and token-level deletions, duplications and swaps over every recipe in recipes/ and tests/) and generated token
soups never produce a traceback: each either still loads or fails with located errors (file:line:col)."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.parser import load_recipe
from sdk.errors import DslError
from tests._specs import write_small
from tests.conftest import RECIPES

TOKEN = re.compile(r'"""(?:.|\n)*?"""|"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_.]*|\d[\d_.eE+-]*|\S')


def mutate(text: str, rng: random.Random) -> str:
    tokens = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
    if not tokens:
        return text + "}"
    i = rng.randrange(len(tokens))
    s, e = tokens[i]
    tok = text[s:e]
    op = rng.choice(["delete_brace", "swap", "misspell", "wrong_type", "delete_token", "junk", "dup_line",
                     "truncate", "drop_line"])
    if op == "delete_brace":
        braces = [m.start() for m in re.finditer(r"[{}\[\]]", text)]
        if braces:
            j = rng.choice(braces)
            return text[:j] + text[j + 1:]
    if op == "swap" and i + 1 < len(tokens):
        s2, e2 = tokens[i + 1]
        return text[:s] + text[s2:e2] + text[e:s2] + tok + text[e2:]
    if op == "misspell" and len(tok) > 2 and tok[0].isalpha():
        k = rng.randrange(1, len(tok))
        return text[:s] + tok[:k] + rng.choice("xqz") + tok[k + 1:] + text[e:]
    if op == "wrong_type":
        repl = rng.choice(['"text"', "12", "true", "[1, 2]", "{ a = 1 }", "-3.5", 'env("X")', "foo.bar"])
        return text[:s] + repl + text[e:]
    if op == "delete_token":
        return text[:s] + text[e:]
    if op == "junk":
        return text[:s] + rng.choice(["@", "$", "'", "\\", "=", ",", "(", ")", '"']) + text[s:]
    lines = text.split("\n")
    k = rng.randrange(len(lines))
    if op == "dup_line":
        return "\n".join(lines[:k + 1] + [lines[k]] + lines[k + 1:])
    if op == "drop_line":
        return "\n".join(lines[:k] + lines[k + 1:])
    return text[: rng.randrange(len(text) + 1)]


def recipe_files(tmp_path: Path) -> list[Path]:
    files = [write_small(tmp_path / "small")]
    if RECIPES.is_dir():
        copy = tmp_path / "recipes"
        shutil.copytree(RECIPES, copy, ignore=shutil.ignore_patterns(".dsl"))
        files += sorted(copy.glob("*.dsl"))
    return files


@pytest.mark.parametrize("seed", range(4))
def test_mutations_give_located_errors_never_tracebacks(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    for original in recipe_files(tmp_path):
        text = original.read_text()
        for _ in range(40):
            mutated = mutate(text, rng)
            if rng.random() < 0.3:
                mutated = mutate(mutated, rng)
            target = original.with_name("mutant.dsl")
            target.write_text(mutated)
            try:
                load_recipe(target)
            except DslError as e:
                located = [d for d in e.diagnostics if d.span is not None and d.span.line >= 1]
                assert located, f"unlocated error for mutation:\n{mutated}\n{e.format()}"
                assert all(d.span.path.endswith(".dsl") for d in located)
                e.format()  # formatting never fails either
            checked += 1
    assert checked >= 40


# ------------------------------------------------- byte-level, token-level and generated recipes (in process)

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILES = [p for p in sorted(ROOT.glob("recipes/*.dsl")) + sorted((ROOT / "tests").rglob("*.dsl")) if p.is_file()]


def check_never_internal(path: Path, data: bytes) -> None:
    """What `dsl validate` and `dsl fmt` do in process: a DslError with located diagnostics, or success."""
    from dsl.printer import format_text

    path.write_bytes(data)
    try:
        load_recipe(path)
    except DslError as e:
        assert any(d.span is not None for d in e.diagnostics), e.format()
        e.format()
    try:
        text = data.decode("utf-8")
        out = format_text(text, str(path))
    except (DslError, UnicodeDecodeError):
        return
    assert format_text(out, str(path)) == out  # whatever parses, formats idempotently


def byte_mutation(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    i = rng.randrange(len(data))
    k = rng.randint(1, 8)
    op = rng.choice(["delete", "duplicate", "swap", "insert", "flip"])
    if op == "delete":
        return data[:i] + data[i + k:]
    if op == "duplicate":
        return data[:i + k] + data[i:i + k] + data[i + k:]
    if op == "swap":
        j = rng.randrange(len(data))
        a, b = sorted((i, j))
        return data[:a] + data[b:b + k] + data[a + k:b] + data[a:a + k] + data[b + k:]
    if op == "insert":
        return data[:i] + bytes(rng.randrange(256) for _ in range(k)) + data[i:]
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def token_mutation(text: str, rng: random.Random) -> str:
    spans = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
    if len(spans) < 2:
        return text
    i, j = sorted(rng.sample(range(len(spans)), 2))
    (s1, e1), (s2, e2) = spans[i], spans[j]
    op = rng.choice(["delete", "duplicate", "swap", "move"])
    if op == "delete":
        return text[:s1] + text[e1:]
    if op == "duplicate":
        return text[:e1] + " " + text[s1:e1] + text[e1:]
    if op == "swap":
        return text[:s1] + text[s2:e2] + text[e1:s2] + text[s1:e1] + text[e2:]
    return text[:s1] + text[e1:s2] + " " + text[s1:e1] + " " + text[s2:]


@pytest.mark.parametrize("level", ["byte", "token"])
def test_byte_and_token_mutations_of_every_recipe(tmp_path: Path, level: str) -> None:
    assert CORPUS_FILES
    rng = random.Random(level)
    target = tmp_path / "mutant.dsl"
    for original in CORPUS_FILES:
        data = original.read_bytes()
        for _ in range(6):
            if level == "byte":
                mutated = byte_mutation(byte_mutation(data, rng), rng)
            else:
                mutated = token_mutation(token_mutation(data.decode("utf-8", "replace"), rng), rng).encode()
            check_never_internal(target, mutated)


PIECES = ["domain", "d", "{", "}", "[", "]", "(", ")", "=", ",", "rag", "r", "corpus", "c", "paths", '"x"',
          '"""a\nb"""', "1", "-2.5e3", "1_000", "true", "false", "null", "not", "and", "or", ">=", "+", "*",
          "env(\"K\")", "file(\"p\")", "rag.r.f1", "corpus.c", "endpoint", "extends", "#c\n", "\n", ":", ";",
          "\ufeff", "'", "\\", "top_k", "gate", "route", "serve", "main"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.integers(0, 3))
def test_generated_recipes_never_give_internal_errors(tmp_path: Path, pieces: list[str], wrap: int) -> None:
    text = " ".join(pieces)
    if wrap:
        text = "domain g {\n" + text + "\n}\n"
    check_never_internal(tmp_path / "gen.dsl", text.encode())


def test_deep_nesting_of_every_kind_is_a_located_error(tmp_path: Path) -> None:
    for text in ("domain t { x = " + "[" * 2000 + "]" * 2000 + " }",
                 "domain t { gate = " + "(" * 2000 + "1" + ")" * 2000 + " }",
                 "domain t { gate = " + "not " * 3000 + "true }",
                 "domain t { x = " + "- " * 3000 + "1 }",
                 "domain t {" * 2000):
        check_never_internal(tmp_path / "deep.dsl", text.encode())
