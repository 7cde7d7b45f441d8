from __future__ import annotations

from pathlib import Path

import pytest

from dsl.parser import load, loads, parse_text
from dsl.printer import print_spec
from sdk import expr as E
from sdk import spec as S
from sdk.errors import SpecError
from tests._specs import write_small


def test_values_of_every_kind(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "q.j2").write_text("{{ documents }} {{ question }}")
    text = r'''
domain t {
  description = "tab\tand \"quote\" \u00e9"
  base_model tiny { architecture = llama { layers = 2, hidden = 64, heads = 4, vocab = 1_000 } }
  base_model hub { id = "org/model"  dtype = bfloat16  chat_template = """{{ messages }}
second line""" }
  corpus c { paths = ["*.dsl"]  split = { by = line, length = 2, overlap = 1 }  dedupe = none }
  pretrain p { from = base_model.tiny  corpus = corpus.c  learning_rate = 2e-5  max_steps = 10  warmup_ratio = .1 }
  rag r { corpus = corpus.c  generator = endpoint { url = "http://x/v1", model = "m", api_key = env("KEY") }
          prompt = file("prompts/q.j2") }
  eval e { data = "r.dsl"  systems = [pretrain.p, rag.r]  metrics = [exact_match, f1]
           gate = rag.r.f1 >= pretrain.p.f1 + 0.1 * 2 and not (rag.r.exact_match.ci_low < -1 + 1.5) }
}
'''
    (tmp_path / "r.dsl").write_text(text)
    spec = load(tmp_path / "r.dsl")
    assert spec.description == 'tab\tand "quote" é'
    assert spec.base_model["tiny"].architecture.vocab == 1000
    assert spec.base_model["hub"].dtype == "bfloat16"
    assert spec.base_model["hub"].chat_template == "{{ messages }}\nsecond line"
    assert spec.corpus["c"].split.by == "line"
    p = spec.pretrain["p"]
    assert p.from_ == S.Ref("base_model", "tiny") and p.learning_rate == 2e-5 and p.warmup_ratio == 0.1
    gen = spec.rag["r"].generator
    assert isinstance(gen, S.Endpoint) and gen.api_key == S.SecretRef("KEY")
    assert spec.rag["r"].prompt == S.FileRef("prompts/q.j2")
    gate = spec.eval["e"].gate
    assert E.to_text(gate) == "rag.r.f1 >= pretrain.p.f1 + 0.1 * 2 and not rag.r.exact_match.ci_low < -1 + 1.5"
    values = {"rag.r.f1": 0.5, "pretrain.p.f1": 0.2, "rag.r.exact_match.ci_low": 0.6}
    assert E.evaluate(gate, lambda m: values[str(m)]) is True


def test_unlabelled_blocks_get_default_label(tmp_path: Path) -> None:
    spec = load(write_small(tmp_path))
    assert set(spec.route) == {"default"} and set(spec.serve) == {"default"}
    assert spec.serve["default"].port == 8123


def test_extends_overrides_attributes_one_by_one(tmp_path: Path) -> None:
    write_small(tmp_path)
    (tmp_path / "child.dsl").write_text('''extends "recipe.dsl"
domain child {
  pretrain base { max_steps = 7 }
  eval extra { data = "eval.jsonl"  systems = [pretrain.base] }
}
''')
    base, child = load(tmp_path / "recipe.dsl"), load(tmp_path / "child.dsl")
    assert child.name == "child"
    assert child.pretrain["base"].max_steps == 7
    assert child.pretrain["base"].corpus == base.pretrain["base"].corpus  # inherited attribute kept
    assert set(child.eval) == {"expert", "extra"}
    assert child.finetune == base.finetune


def test_null_unsets_an_inherited_attribute(tmp_path: Path) -> None:
    write_small(tmp_path)
    (tmp_path / "child.dsl").write_text('extends "recipe.dsl"\ndomain child {\n  pretrain base { max_steps = null }\n}\n')
    base, child = load(tmp_path / "recipe.dsl"), load(tmp_path / "child.dsl")
    assert base.pretrain["base"].max_steps == 3
    assert child.pretrain["base"].max_steps is None  # back to the default (train for `epochs`)
    assert child.pretrain["base"].corpus == base.pretrain["base"].corpus


def test_extends_cycle_and_missing_base_are_located(tmp_path: Path) -> None:
    (tmp_path / "a.dsl").write_text('extends "b.dsl"\ndomain a {}\n')
    (tmp_path / "b.dsl").write_text('extends "a.dsl"\ndomain b {}\n')
    with pytest.raises(SpecError) as e:
        load(tmp_path / "a.dsl")
    assert "cycle" in e.value.format()
    (tmp_path / "c.dsl").write_text('extends "nope.dsl"\ndomain c {}\n')
    with pytest.raises(SpecError) as e:
        load(tmp_path / "c.dsl")
    assert ":1:1: error: extends 'nope.dsl': no such file" in e.value.format()


def test_comments_are_attached() -> None:
    doc = parse_text('# lead\ndomain t { # head\n  description = "x" # tail\n  # inner\n}\n# foot\n', "r.dsl")
    dom = doc.items[0]
    assert dom.comments == ["# lead"] and dom.trailing == "# head"
    assert dom.items[0].trailing == "# tail"
    assert dom.inner_trailing == ["# inner"] and doc.footer_comments == ["# foot"]


def test_nested_block_form_equals_object_form(tmp_path: Path) -> None:
    a = loads('domain t { rag r { corpus = corpus.c  store = pgvector { connection = env("PG") } } corpus c { paths = ["x"] } }')
    b = loads('domain t { rag r { corpus = corpus.c\n store pgvector { connection = env("PG") } } corpus c { paths = ["x"] } }')
    assert a == b and isinstance(a.rag["r"].store, S.PgVector)


def test_secret_value_never_enters_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY", "s3cr3t-value")
    spec = loads('domain t { eval e { data = "x"  systems = [endpoint { url = "http://h/v1", model = "m", api_key = env("KEY") }] } }')
    assert "s3cr3t" not in spec.model_dump_json() and "s3cr3t" not in print_spec(spec)
    assert spec.eval["e"].systems[0].api_key.resolve() == "s3cr3t-value"


# ---------------------------------------------------------------- characters and habits from other formats

HABITS = '''domain t {
  corpus c { paths = ["x"] }
  rag docs { corpus = corpus.c  top_k = 3 }
}
'''


def syntax_message(text: str) -> tuple[str, str, int, int]:
    """(message, hint, line, col) of the one syntax error of ``text``."""
    with pytest.raises(SpecError) as e:
        loads(text, path="r.dsl")
    d = e.value.diagnostics[0]
    assert d.span is not None
    return d.message, d.hint or "", d.span.line, d.span.col


@pytest.mark.parametrize("before, after, message, hint, caret", [
    # a Cyrillic letter in a label: named, with its code point and the ASCII spelling
    ("rag docs", "rag d\u043ecs", "CYRILLIC SMALL LETTER O (U+043E) looks like 'o'", "write docs", "\u043e"),
    # in a reference right after the dot: the caret is on the letter, not on the dot
    ("corpus.c ", "corpus.\u0441 ", "CYRILLIC SMALL LETTER ES (U+0441) looks like 'c'", "write corpus.c", "\u0441"),
    # a Greek letter, an accented letter (found by NFKD), a letter with no look-alike
    ("top_k", "t\u03bfp_k", "GREEK SMALL LETTER OMICRON (U+03BF) looks like 'o'", "write top_k", "\u03bf"),
    ("top_k", "t\u00f3p_k", "LATIN SMALL LETTER O WITH ACUTE (U+00F3) looks like 'o'", "write top_k", "\u00f3"),
    ("top_k", "\u05d0top_k", "HEBREW LETTER ALEF (U+05D0)", "other text belongs inside a string", "\u05d0"),
    # typographic quotes, 'single quotes', // comments, 30%
    ('["x"]', "[\u201cx\u201d]", "LEFT DOUBLE QUOTATION MARK (U+201C) looks like '\"'", 'write "x"', "\u201c"),
    ('["x"]', "['x']", "unexpected character \"'\"", 'strings use double quotes: write "x"', "'"),
    ("top_k = 3 }", "top_k = 3 }  // three", "unexpected character '/'", "write # three", "/"),
    ("top_k = 3 }", "top_k = 3 }  -- three", "unexpected '-'", "write # three", "-"),
    ('["x"]', "[`x`]", "unexpected character '`'", 'strings use double quotes: write "x"', "`"),
    ("top_k = 3", "top_k = ~", "unexpected character '~'", "an unset value is written null", "~"),
    ("top_k = 3", "top_k = 30%", "unexpected character '%'", "write 0.3 for 30%", "%"),
    ("top_k = 3", "top_k = 12.5 %", "unexpected character '%'", "write 0.125 for 12.5%", "%"),
    # a hyphen in a label, an attribute name or a reference: names use _
    ("rag docs", "rag my-docs", "unexpected '-'", "write my_docs", "-"),
    ("top_k", "top-k", "unexpected '-'", "write top_k", "-"),
    ("corpus.c ", "corpus.my-c ", "'corpus.my-c' is not a name", "write corpus.my_c", "corpus.my"),
])
def test_odd_characters_and_habits_get_a_located_hint(before: str, after: str, message: str, hint: str,
                                                       caret: str) -> None:
    text = HABITS.replace(before, after, 1)
    assert text != HABITS
    got, got_hint, line, got_col = syntax_message(text)
    assert message in got and hint in got_hint, (got, got_hint)
    assert line == (2 if "[" in after else 3)
    assert got_col == text.split("\n")[line - 1].index(caret) + 1  # the caret is on the character at fault


def test_hyphenated_enum_values_are_written_bare_as_the_docs_write_them() -> None:
    text = HABITS.replace("top_k = 3", "embedding_backend = onnx-int8")
    assert loads(text).rag["docs"].embedding_backend == "onnx-int8"
    assert loads(text.replace("onnx-int8", '"onnx-int8"')) == loads(text)
    assert "embedding_backend = onnx-int8" in print_spec(loads(text))
    with pytest.raises(SpecError) as e:  # the other spelling is refused with the right one as a hint
        loads(text.replace("onnx-int8", "onnx_int8"))
    assert "'onnx_int8' is not one of" in e.value.format() and "did you mean 'onnx-int8'?" in e.value.format()
    # a subtraction in a gate is still a subtraction, with or without spaces
    gate = E.parse("rag.a.f1 - rag.b.f1 >= 0.1")
    for written in ("rag.a.f1 - rag.b.f1 >= 0.1", "rag.a.f1-rag.b.f1 >= 0.1"):
        doc = parse_text(f"domain t {{\n  eval e {{ gate = {written} }}\n}}\n")
        assert doc.items[0].items[0].items[0].value.value == gate
    doc = parse_text("domain t {\n  eval e { gate = rag.a.f1-1 >= 0 }\n}\n")  # a number after it: arithmetic
    assert doc.items[0].items[0].items[0].value.value == E.parse("rag.a.f1 - 1 >= 0")


def test_a_refused_bare_word_is_named_with_the_suggestion() -> None:
    with pytest.raises(SpecError) as e:
        loads(HABITS.replace("top_k = 3", "rerank_top_k = 2  retriever = hybrid  embedding_backend = yes"))
    assert "'yes' is not one of auto, torch, onnx, onnx-int8" in e.value.format()
    with pytest.raises(SpecError) as e:
        loads(HABITS.replace('paths = ["x"]', 'paths = ["x"]  clean = yes'))
    assert "corpus.c.clean: expected true or false, got a bare name 'yes'" in e.value.format()
    assert "hint: did you mean true?" in e.value.format()
