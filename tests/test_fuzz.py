"""Random mutations of every recipe (deleted braces, swapped tokens, misspelled names, wrong types, junk)
never produce a traceback: each either still loads or fails with located errors (file:line:col)."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest

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
