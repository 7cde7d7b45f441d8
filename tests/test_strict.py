"""Strict values: a number is a number literal, a boolean is true or false. Every refused coercion is a located
error with a hint in the DSL; the Python builder refuses the same values."""

from __future__ import annotations

import pytest

import sdk
from dsl.parser import loads
from sdk.errors import SpecError

BASE = '''domain t {
  base_model b { id = "org/tiny" }
  dataset d { path = "x.jsonl"  format = chat }
  finetune f { from = base_model.b  data = dataset.d  ATTR }
}
'''


def error_for(attr: str) -> str:
    with pytest.raises(SpecError) as e:
        loads(BASE.replace("ATTR", attr), path="r.dsl")
    return e.value.format()


@pytest.mark.parametrize("attr, message, hint", [
    ('max_steps = "20"', "finetune.f.max_steps: expected an integer, got a string", 'write 20, not "20"'),
    ('learning_rate = "1e-4"', "expected a number, got a string", 'write 1e-4, not "1e-4"'),
    ("max_steps = 20.0", "expected an integer, got a number with a fraction", "write 20"),
    ("epochs = true", "finetune.f.epochs: expected a number, got a boolean", "a boolean is not a number"),
    ("merge = 1", "finetune.f.merge: expected true or false, got a number", "did you mean true?"),
    ("merge = 0", "expected true or false, got a number", "did you mean false?"),
    ("merge = True", "expected true or false, got a bare name", "did you mean true?"),
    ("packing = yes", "expected true or false, got a bare name", "did you mean true?"),
    ("packing = off", "expected true or false, got a bare name", "did you mean false?"),
    ('merge = "off"', "expected true or false, got a string", 'write false, not "off"'),
    ('merge = "true"', "expected true or false, got a string", 'write true, not "true"'),
    ("max_steps = None", "expected an integer, got a bare name", "did you mean null?"),
])
def test_each_refused_coercion_is_located_with_a_hint(attr: str, message: str, hint: str) -> None:
    text = error_for(attr)
    assert "r.dsl:4:" in text and message in text and f"hint: {hint}" in text
    col = BASE.split("\n")[3].index("ATTR") + attr.index("=") + 3
    assert f"r.dsl:4:{col}:" in text  # the caret is under the value


def test_literals_of_the_right_type_are_accepted() -> None:
    spec = loads(BASE.replace("ATTR", "max_steps = 20  epochs = 2  merge = true  learning_rate = 1e-4"))
    f = spec.finetune["f"]
    assert (f.max_steps, f.epochs, f.merge, f.learning_rate) == (20, 2.0, True, 1e-4)


def test_the_builder_is_strict_too() -> None:
    d = sdk.Domain("t")
    d.base_model("b", id="org/tiny")
    d.dataset("d", path="x.jsonl", format="chat")
    d.finetune("f", from_="base_model.b", data="dataset.d", max_steps="20", merge=1)
    with pytest.raises(SpecError) as e:
        d.build(check_files=False)
    text = e.value.format()
    assert "finetune.f.max_steps" in text and "finetune.f.merge" in text  # refused, not coerced
