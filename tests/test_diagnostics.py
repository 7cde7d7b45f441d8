"""Golden error messages: every broken recipe in tests/golden/ gives exactly the located text in its .err file
(PATH:LINE:COL: error: MESSAGE, the source line, a caret, a hint), with exit code 1 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_dsl

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.dsl"))


@pytest.mark.parametrize("case", CASES)
def test_golden_error(case: str) -> None:
    proc = run_dsl("validate", f"{case}.dsl", cwd=GOLDEN)
    expected = (GOLDEN / f"{case}.err").read_text()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr == expected


def test_every_golden_case_is_located() -> None:
    for case in CASES:
        first = (GOLDEN / f"{case}.err").read_text().splitlines()[0]
        assert first.startswith(f"{case}.dsl:") and ": error: " in first, case


def test_all_semantic_errors_are_reported_together() -> None:
    text = (GOLDEN / "wrong_type_and_range.err").read_text()
    assert text.count(": error: ") == 3


def test_json_diagnostics() -> None:
    import json

    proc = run_dsl("validate", "--json", "bad_reference.dsl", cwd=GOLDEN)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["valid"] is False
    err = data["errors"][0]
    assert (err["line"], err["col"]) == (4, 23) and err["hint"] == "did you mean base_model.tiny?"


def test_debug_flag_shows_traceback_only_for_internal_errors() -> None:
    proc = run_dsl("--debug", "validate", "bad_enum.dsl", cwd=GOLDEN)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # user errors stay clean


def test_usage_error_exit_code() -> None:
    proc = run_dsl("plan")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_brace_errors_come_with_the_matching_brace_as_a_note() -> None:
    for case in ("stray_brace", "unclosed_by_indent"):
        text = (GOLDEN / f"{case}.err").read_text()
        assert text.count(": error: ") == 1 and text.count(": note: ") == 1, case
    assert "unclosed_by_indent.dsl:2:12: error: this '{' is never closed" in (GOLDEN / "unclosed_by_indent.err").read_text()
    assert "stray_brace.dsl:4:3: error: this '}' closes nothing" in (GOLDEN / "stray_brace.err").read_text()


def test_empty_and_domainless_files_get_one_located_error() -> None:
    for case in ("empty", "no_domain"):
        text = (GOLDEN / f"{case}.err").read_text()
        assert text.count(": error: ") == 1 and text.startswith(f"{case}.dsl:1:1: error: the recipe has no domain")


def test_deep_nesting_is_a_located_error_not_an_internal_one() -> None:
    proc = run_dsl("validate", "deep_nesting.dsl", cwd=GOLDEN)
    assert proc.returncode == 1 and "nesting deeper than 64 brackets" in proc.stderr and "internal" not in proc.stderr


def test_odd_characters_and_habits_name_what_to_write() -> None:
    hints = {"confusable_letter": "hint: write corpus.archive in plain ASCII letters",
             "single_quotes": 'hint: strings use double quotes: write "notes.txt"',
             "slash_comment": "hint: comments start with # and run to the end of the line: write # the handbook",
             "percent_sign": "hint: a share is written as a fraction: write 0.3 for 30%",
             "hyphen_label": "hint: names are letters, digits and _, not -: write cell_sites",
             "hyphen_reference": "hint: write corpus.cell_sites",
             "bare_words": "hint: did you mean 'onnx-int8'?"}
    for case, hint in hints.items():
        assert hint in (GOLDEN / f"{case}.err").read_text(), case
    # a look-alike letter right after a dot: the caret is under the letter (column 30), not the dot (29)
    assert (GOLDEN / "confusable_letter.err").read_text().startswith(
        "confusable_letter.dsl:3:30: error: unexpected character 'а': CYRILLIC SMALL LETTER A (U+0430) looks like 'a'")
    assert "got a bare name 'yes'" in (GOLDEN / "bare_words.err").read_text()


PLAN_GOLDEN = GOLDEN / "plan"
PLAN_CASES = sorted(p.stem for p in PLAN_GOLDEN.glob("*.dsl"))


@pytest.mark.parametrize("case", PLAN_CASES)
def test_golden_plan_error(tmp_path: Path, case: str) -> None:
    """Mistakes in the data files a step will read (tests/golden/plan/): the recipe validates, and `dsl plan`
    stops with the FILE:LINE of the bad row, located at the attribute that names the file, before any step runs."""
    assert run_dsl("validate", f"{case}.dsl", cwd=PLAN_GOLDEN).returncode == 0
    proc = run_dsl("plan", "--backend", "test", "--workdir", str(tmp_path / "wd"), f"{case}.dsl", cwd=PLAN_GOLDEN)
    expected = (PLAN_GOLDEN / f"{case}.err").read_text()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == expected
    assert expected.startswith(f"{case}.dsl:") and ": error: " in expected
