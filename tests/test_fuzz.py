"""Random mutations of every recipe (deleted braces, swapped tokens, misspelled names, wrong types, junk; byte-level
and token-level deletions, duplications and swaps over every recipe in recipes/ and tests/) and generated token
soups never produce a traceback: each either still loads or fails with located errors (file:line:col)."""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------------------------- data files
# Every data format the language reads, mutated row by row: the mutant is a located error at validate or plan
# (the test backend plans; sdk.datachecks reads each file a step will read), or the reader the step itself calls
# when it runs accepts it. Never an error at apply, never a traceback.

_CHAT = {"messages": [{"role": "user", "content": "What does BYE do?"}, {"role": "assistant", "content": "Ends it."}]}
_PAIR = {"prompt": "What does INVITE do?", "chosen": "It starts a session.", "rejected": "It ends one."}
_PAIR_CHAT = {"prompt": [{"role": "user", "content": "INVITE?"}], "chosen": [{"role": "assistant", "content": "Start"}],
              "rejected": [{"role": "assistant", "content": "End"}]}
_ITEM = {"id": "1", "question": "What does BYE do?", "answer": "ends it", "sources": ["notes.txt"]}
_MC = {"id": "1", "question": "Which starts a call?", "choices": ["INVITE", "BYE"], "answer": "INVITE"}
DATA_FORMATS: dict[str, tuple[str, str, str]] = {  # name: (block, file name, content)
    "corpus_jsonl": ('corpus k { paths = ["f.jsonl"] }', "f.jsonl", '{"text": "INVITE starts it."}\n{"text": "BYE"}'),
    "dataset_chat": ('dataset d { path = "f.jsonl"  validation_split = 0.3 }', "f.jsonl",
                     "\n".join(json.dumps(_CHAT) for _ in range(3))),
    "dataset_instruction": ('dataset d { path = "f.jsonl"  format = instruction }', "f.jsonl",
                            "\n".join(json.dumps({"instruction": f"Q{i}", "input": "", "output": "A"}) for i in range(3))),
    "dataset_text": ('dataset d { path = "f.jsonl"  format = text }', "f.jsonl", '{"text": "INVITE"}\n{"text": "BYE"}'),
    "pairs": ('align a { from = pretrain.p  pairs = "f.jsonl" }', "f.jsonl", "\n".join([json.dumps(_PAIR)] * 3)),
    "pairs_chat": ('align a { from = pretrain.p  pairs = "f.jsonl"  method = orpo }', "f.jsonl",
                   "\n".join([json.dumps(_PAIR_CHAT)] * 3)),
    "kto": ('align a { from = pretrain.p  pairs = "f.jsonl"  method = kto }', "f.jsonl",
            "\n".join(json.dumps({"prompt": f"q{i}", "completion": "a", "label": i % 2 == 0}) for i in range(4))),
    "eval_jsonl": ('eval e { data = "f.jsonl"  systems = [pretrain.p] }', "f.jsonl",
                   "\n".join(json.dumps({**_ITEM, "id": str(i)}) for i in range(3))),
    "eval_mc": ('eval e { data = "f.jsonl"  systems = [pretrain.p]  task = multiple_choice  metrics = [accuracy] }',
                "f.jsonl", "\n".join(json.dumps({**_MC, "id": str(i)}) for i in range(3))),
    "eval_tsv": ('eval e { data = "f.tsv"  systems = [pretrain.p] }', "f.tsv", "id\tquestion\tanswer\n1\tQ?\tA\n2\tR?\tB"),
    "eval_json": ('eval e { data = "f.json"  systems = [pretrain.p] }', "f.json",
                  json.dumps({"a": {"question": "Q?", "answer": "A"}, "b": {"question": "R?", "answer": "B"}}, indent=1)),
    "route": ('rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "f.jsonl"  domain = rag.r }', "f.jsonl",
              "\n".join(json.dumps({"text": f"{q} {i}?", "target": t}) for i in range(3)
                        for q, t in (("What does INVITE do", "domain"), ("Weather", "general")))),
    "reward": ('reward g { from = pretrain.p  prompts = "f.jsonl"  rewards = { exact_match = 1.0, citation_recall = 1.0 } }',
               "f.jsonl", "\n".join(json.dumps({"question": f"Q{i}?", "answer": "A", "choices": ["A", "B"],
                                                "context": [{"source": "s.md", "text": "A is right"}],
                                                "sources": ["s.md"]}) for i in range(2))),
}
_VALUES = ["", " ", "true", 1, 0, -1, 2.5, True, False, None, [], {}, ["x"], [{"role": "user"}],
           [{"role": "assistant", "content": ""}], {"a": 1}, "\u2028", "x" * 300]


def _mutate_row(line: str, data: st.DataObject) -> str:
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        op = data.draw(st.sampled_from(["drop", "value", "rename", "nested"]))
        if op == "drop":
            obj.pop(key)
        elif op == "value":
            obj[key] = data.draw(st.sampled_from(_VALUES))
        elif op == "rename":
            obj[key + "_"] = obj.pop(key)
        elif isinstance(obj[key], list) and obj[key]:
            item = obj[key][0]
            obj[key][0] = {k: data.draw(st.sampled_from(_VALUES)) for k in item} if isinstance(item, dict) \
                else data.draw(st.sampled_from(_VALUES))
        return json.dumps(obj)
    cells = line.split("\t")  # a TSV row
    i = data.draw(st.integers(0, len(cells) - 1))
    cells[i] = data.draw(st.sampled_from(["", '"', "a\tb", " "]))
    return "\t".join(cells)


def _mutate_file(text: str, data: st.DataObject) -> bytes:
    lines = text.split("\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    op = data.draw(st.sampled_from(["row", "row", "row", "truncate", "junk", "dup", "delete", "empty", "bytes",
                                    "encoding"]))
    if op == "row":
        lines[i] = _mutate_row(lines[i], data)
    elif op == "truncate":
        lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
    elif op == "junk":
        k = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:k] + data.draw(st.sampled_from(["{", "}", ",", '"', "\\", "\t", "NaN", "\x00"])) + lines[i][k:]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "delete":
        del lines[i]
    elif op == "empty":
        return data.draw(st.sampled_from([b"", b"\n", b"  \n\n"]))
    elif op == "encoding":  # the whole file as another tool writes it: a byte order mark, UTF-16, CRLF, gzip
        how = data.draw(st.sampled_from(["bom", "utf16", "crlf", "gzip", "latin1"]))
        whole = "\n".join(lines)
        return {"bom": lambda: b"\xef\xbb\xbf" + whole.encode(), "utf16": lambda: whole.encode("utf-16"),
                "crlf": lambda: whole.replace("\n", "\r\n").encode(), "gzip": lambda: gzip.compress(whole.encode()),
                "latin1": lambda: (whole + "\n" + lines[-1].replace("?", "\u00e9?")).encode("latin-1", "replace")}[how]()
    else:
        return "\n".join(lines).encode()[:-3] + b"\xff\xfe" + b"\n"
    return "\n".join(lines).encode()


def _apply_reader(spec: Any, kind: str, block: Any, path: Path) -> None:
    """What the step reads when it runs, before any model loads (the backends' own functions)."""
    from types import SimpleNamespace

    shown = path.name
    if kind == "corpus":
        from sdk.backends.rag.corpus import jsonl_rows, decode_text
        from sdk.jsonl import parse_jsonl

        jsonl_rows(parse_jsonl(decode_text(path.read_bytes(), shown).split("\n"), shown, objects=False), shown,
                    block.text_field)
    elif kind == "dataset":
        from sdk.backends.data.datasets import read_rows, split

        split(read_rows(path, block, shown), block.validation_split)
    elif kind == "align":
        from sdk.backends.training.align import AlignBackend

        AlignBackend()._read(SimpleNamespace(block=block, log=lambda m: None), path, shown)  # type: ignore[arg-type]
    elif kind == "eval":
        from sdk.backends.eval.answers import task_of
        from sdk.evalsets import load_items

        items = load_items(path, block, block.data, limit=block.limit)
        if task_of(block, items) == "multiple_choice":  # what EvalBackend.run refuses before answering
            assert all(it.choices for it in items)
    elif kind == "route":
        from sdk.backends.routing.route import example_problem, known_targets, read_examples

        assert example_problem(read_examples(path, block.examples, known_targets(block)), block) is None
    elif kind == "reward":
        from sdk.backends.training.reward import RewardBackend
        from sdk.backends.training.reward_data import needs_context

        needs_context(RewardBackend._rows(block, spec, path, shown), block.rewards, shown)


def _fuzzed(spec: Any) -> tuple[str, Any]:
    """The block that reads the mutated file: not the recipe's own base model, corpus, pretrain step or rag."""
    return next((k, b) for k, lbl, b in spec.blocks()
                if k not in ("base_model", "pretrain", "rag") and (k, lbl) != ("corpus", "c"))


@pytest.fixture(scope="module")
def data_recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    out = {}
    for name, (block, file_name, _) in DATA_FORMATS.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "notes.txt").write_text("INVITE starts a SIP session. BYE ends it.\n")
        (folder / file_name).write_text(DATA_FORMATS[name][2] + "\n")
        recipe = folder / "r.dsl"
        recipe.write_text('domain t {\n  base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }\n'
                          '  corpus c { paths = ["notes.txt"] }\n  pretrain p { from = base_model.b  corpus = corpus.c }\n'
                          f"  {block}\n}}\n")
        out[name] = (recipe, folder / file_name)
    return out


@pytest.mark.parametrize("fmt", sorted(DATA_FORMATS))
def test_the_valid_data_files_plan_and_read(data_recipes: dict[str, tuple[Path, Path]], fmt: str) -> None:
    from sdk.planner import plan

    recipe, path = data_recipes[fmt]
    spec = load_recipe(recipe).spec
    plan(spec, None, backend="test")
    kind, block = _fuzzed(spec)
    _apply_reader(spec, kind, block, path)


@pytest.mark.parametrize("fmt", sorted(DATA_FORMATS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_data_files_fail_at_plan_never_at_apply(data_recipes: dict[str, tuple[Path, Path]], fmt: str,
                                                        data: st.DataObject) -> None:
    from sdk.planner import PlanProblems, plan

    recipe_path, path = data_recipes[fmt]
    original = DATA_FORMATS[fmt][2]
    path.write_bytes(_mutate_file(original, data))
    try:
        try:
            recipe = load_recipe(recipe_path)
        except DslError as e:  # validate: located in the recipe
            assert all(d.span is not None and d.span.line >= 1 for d in e.diagnostics), e.format()
            return
        try:
            plan(recipe.spec, None, backend="test")
        except PlanProblems as e:  # plan: located at the attribute naming the file, the message at FILE[:LINE]
            diags = recipe.diagnostics(e.problems)
            assert diags and all(d.span is not None and d.span.line >= 1 for d in diags), e.problems
            assert all(path.name in d.message or "template" in d.message for d in diags), e.problems
            return
        kind, block = _fuzzed(recipe.spec)
        _apply_reader(recipe.spec, kind, block, path)  # plan passed: the step must read it too
    finally:
        path.write_text(original + "\n")
