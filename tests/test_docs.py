"""The docs match the code: the attribute reference in docs/language.md is generated from the spec."""

from __future__ import annotations

from dsl.docgen import BEGIN, END, reference
from tests.conftest import ROOT


def test_language_reference_is_current() -> None:
    text = (ROOT / "docs" / "language.md").read_text()
    current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert current == reference().strip(), "run: python -m dsl.docgen --write"


def test_every_block_kind_is_documented() -> None:
    from sdk.spec import KINDS

    text = (ROOT / "docs" / "language.md").read_text()
    for kind in KINDS:
        assert f"### `{kind}" in text
