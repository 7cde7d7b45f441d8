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
    (tmp_path / "prompts" / "q.j2").write_text("{{ question }}")
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
           gate = rag.r.f1 >= pretrain.p.f1 + 0.1 * 2 and not (rag.r.exact_match.ci_low < -1) }
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
    assert E.to_text(gate) == "rag.r.f1 >= pretrain.p.f1 + 0.1 * 2 and not rag.r.exact_match.ci_low < -1"
    values = {"rag.r.f1": 0.5, "pretrain.p.f1": 0.2, "rag.r.exact_match.ci_low": 0.0}
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
