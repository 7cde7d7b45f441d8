"""The dataset step: rows normalised to chat messages or text; bad data named by file and line at plan time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.errors import SpecError
from sdk.planner import PlanProblems
from tests.conftest import run_dsl


def _recipe(tmp_path: Path, rows: list[str], fmt: str = "chat", extra: str = "") -> Path:
    (tmp_path / "sft.jsonl").write_text("\n".join(rows) + "\n")
    path = tmp_path / "r.dsl"
    path.write_text(f'domain d {{\n  dataset qa {{\n    path = "sft.jsonl"\n    format = {fmt}\n{extra}  }}\n}}\n')
    return path


def test_instruction_rows_become_chat_with_field_mapping(tmp_path: Path) -> None:
    rows = [json.dumps({"q": f"question {i}", "ctx": "", "a": f"answer {i}"}) for i in range(20)]
    path = _recipe(tmp_path, rows, "instruction",
                   '    fields = { instruction = "q", input = "ctx", output = "a" }\n    validation_split = 0.2\n'
                   '    system_prompt = "Be brief."\n')
    result = sdk.apply(load(path))
    assert result.ok
    art = Path(sdk.workspace.open_workspace(path).artifact("dataset.qa").path)
    train = [json.loads(x) for x in (art / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (art / "validation.jsonl").read_text().splitlines()]
    assert len(train) + len(val) == 20 and val
    first = train[0]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][1]["content"].startswith("question") and first["_line"] >= 1


@pytest.mark.parametrize(
    "rows,message",
    [
        (['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "{oops"],
         "sft.jsonl:2: malformed JSON"),
        (['{"text": "x"}'], "sft.jsonl:1: row needs a non-empty list 'messages'"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], "sft.jsonl:1: the conversation has no non-empty assistant"),
        (['{"messages": [{"role": "robot", "content": "hi"}]}'], "sft.jsonl:1: message 0 must be"),
        (["", "  "], "sft.jsonl: the dataset has no rows"),
        (["[1, 2]"], "sft.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_rows_are_reported_at_plan_time_with_file_and_line(tmp_path: Path, rows: list[str], message: str) -> None:
    path = _recipe(tmp_path, rows)
    with pytest.raises(PlanProblems) as e:
        sdk.plan(load(path))
    assert message in str(e.value)
    proc = run_dsl("plan", str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "r.dsl:3:12: error: " in proc.stderr and message in proc.stderr  # pointed at the `path` attribute too
    assert not (tmp_path / ".dsl").exists()


def test_missing_mapped_field_names_the_field(tmp_path: Path) -> None:
    path = _recipe(tmp_path, ['{"question": "q", "answer": "a"}'], "instruction", '    fields = { instruction = "question" }\n')
    with pytest.raises(PlanProblems, match="sft.jsonl:1: row has no 'output' field"):
        sdk.plan(load(path))


def test_fields_that_do_not_fit_the_format_are_a_spec_error(tmp_path: Path) -> None:
    path = _recipe(tmp_path, ['{"text": "x"}'], "text", '    fields = { output = "a" }\n')
    with pytest.raises(SpecError, match="fields output do not apply to format text"):
        load(path)


def test_jsonl_reader_keeps_line_separators_inside_strings(tmp_path: Path) -> None:
    from sdk.jsonl import read_jsonl

    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "one\u2028two"}, ensure_ascii=False) + "\n\n" + '{"text": "b"}\n', encoding="utf-8")
    rows = list(read_jsonl(f))
    assert rows == [(1, {"text": "one\u2028two"}), (3, {"text": "b"})]
