"""Eval sets: our JSONL rows, public formats through field mappings (JSON dict, TSV, AES zip), located errors,
`dsl eval-set check` and `dsl eval-set export`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdk.errors import DataError
from sdk.evalsets import check, contamination, export_lm_eval, load_items
from sdk.spec import EvalBlock, SecretRef
from tests.conftest import run_dsl


def block(**kw: object) -> EvalBlock:
    data = "x.zip" if "password" in kw else "x"  # a password applies to a zip only
    return EvalBlock(data=data, systems=["base_model.x"], **kw)  # type: ignore[arg-type]


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_rows_aliases_choices_and_labels(tmp_path: Path) -> None:
    f = write(tmp_path / "e.jsonl", [
        {"id": "a", "question": "Which request starts a call?", "answer": ["INVITE", "an INVITE request"],
         "sources": ["sip.md"], "tags": ["sip"]},
        {"id": "b", "question": "Ends a call?", "answer": 2, "choices": ["INVITE", "BYE"]},
        {"id": "c", "question": "Is SIP text based?", "label": "yes", "answer": ""},
    ])
    items = load_items(f, block())
    assert [it.id for it in items] == ["a", "b", "c"]
    assert items[0].answers == ["INVITE", "an INVITE request"] and items[0].sources == ["sip.md"]
    assert items[0].tags == ["sip"] and items[0].line == 1
    assert items[1].answers == ["BYE"] and items[1].gold == "BYE"  # answer given as the option's number
    assert items[2].label == "yes" and items[2].gold == "yes"


def test_teleqna_style_mapping(tmp_path: Path) -> None:
    rows = {"question 0": {"question": "What does SIP stand for?", "option 1": "Simple IP",
                           "option 2": "Session Initiation Protocol", "option 10": "ten",
                           "answer": "option 2: Session Initiation Protocol", "category": "Lexicon"}}
    f = tmp_path / "t.json"
    f.write_text(json.dumps(rows))
    items = load_items(f, block(fields={"choices": "option *", "answer_pattern": r"option (\d+)"}))
    assert items[0].id == "question 0"
    assert items[0].choices == ["Simple IP", "Session Initiation Protocol", "ten"]  # numeric order, not 1, 10, 2
    assert items[0].answers == ["Session Initiation Protocol"]


def test_aes_zip_with_password_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyzipper

    rows = {"question 1": {"question": "Q?", "option 1": "a", "option 2": "b", "answer": "option 1: a"}}
    z = tmp_path / "set.zip"
    with pyzipper.AESZipFile(z, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(b"s3cret")
        zf.writestr("set.json", json.dumps(rows))
    b = block(fields={"choices": "option *", "answer_pattern": r"option (\d+)"}, password=SecretRef(env="EVAL_PW"))
    monkeypatch.setenv("EVAL_PW", "s3cret")
    assert load_items(z, b)[0].answers == ["a"]
    monkeypatch.setenv("EVAL_PW", "wrong")
    with pytest.raises(DataError, match="set.zip: cannot open the zip"):
        load_items(z, b)


def test_pubmedqa_and_tsv_style_mappings(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"123": {"QUESTION": "Does X help?", "CONTEXTS": ["c1", "c2"], "final_decision": "no"}}))
    it = load_items(f, block(format="json", fields={"question": "QUESTION", "answer": None, "label": "final_decision",
                                                     "context": "CONTEXTS"}))[0]
    assert (it.id, it.label, it.context) == ("123", "no", "c1\nc2")
    t = tmp_path / "h.tsv"
    t.write_text("label\ttext\tslice\nYes\tA said B.\tx\nNo\tC did D.\ty\n")
    items = load_items(t, block(fields={"question": "text", "answer": None, "label": "label"}))
    assert [(i.label, i.line) for i in items] == [("Yes", 2), ("No", 3)]


@pytest.mark.parametrize("rows,fields,message", [
    ([{"question": "ok", "answer": "x"}, "{not json"], {}, r"e.jsonl:2: malformed JSON"),
    ([{"question": "ok", "answer": "x"}, [1, 2]], {}, r"e.jsonl:2: expected a JSON object"),
    ([{"question": "", "answer": "x"}], {}, r"e.jsonl:1: .*no question"),
    ([{"question": "q", "answer": "D", "choices": ["A", "B"]}], {}, r"e.jsonl:1: answer 'D' is not among the choices"),
    ([{"question": "q"}], {}, r"e.jsonl:1: row has neither an answer nor a label"),
    ([{"question": "q", "answer": "x"}], {"answer_pattern": r"option (\d)"}, r"e.jsonl:1: .*does not match answer_pattern"),
    ([], {}, r"e.jsonl: the eval set has no usable items"),
])
def test_bad_rows_are_located(tmp_path: Path, rows: list[object], fields: dict, message: str) -> None:
    f = write(tmp_path / "e.jsonl", rows)
    with pytest.raises(DataError, match=message):
        load_items(f, block(fields=fields), "e.jsonl")


def test_check_findings() -> None:
    from sdk.evalsets import EvalItem

    items = [EvalItem("1", "Which request starts a SIP call?", ["INVITE"], label="yes", line=1),
             EvalItem("1", "Which request ends a SIP call?", ["BYE"], label="yes", line=2),
             EvalItem("3", "which request ends a SIP call", [" "], label="yes", line=3),
             EvalItem("4", "Which node keeps subscriber data?", ["HSS"], label="no", line=4)]
    findings = check(items, ["Q: a node keeps subscriber data. A: the HSS", "So: which request ends a SIP call?"], n=3)
    text = [(f.severity, f.line, f.message) for f in findings]
    assert ("error", 2, "duplicate id '1' (also on line 1)") in text
    assert any(s == "warning" and ln == 3 and "duplicate question" in m for s, ln, m in text)
    assert ("error", 3, "empty answer") in text
    assert any("label imbalance" in m and "'yes' is 75%" in m for _, _, m in text)
    assert any(ln == 4 and "3-gram" in m for _, ln, m in text)  # the question leaked into the training data
    assert ("error", 2, "the question appears verbatim in the training data") in text
    assert not any(ln == 1 and "training" in m for _, ln, m in text)
    # a JSON array has no lines: the first holder of the id is named by its place; choices that cannot be told apart
    more = [EvalItem("x", "Q1?", ["A"], choices=["A", "B"]), EvalItem("x", "Q2?", ["A"], choices=["A"]),
            EvalItem("y", "Q3?", ["B"], choices=["A", "B", "A "])]
    text = [(f.item, f.message) for f in check(more)]
    assert ("x", "duplicate id 'x' (also item 1 of the set)") in text
    assert ("x", "a multiple-choice item needs at least 2 choices, this one has 1") in text
    assert ("y", "choice 'A ' appears twice (an answer naming it cannot be told apart)") in text


def test_contamination_shares() -> None:
    from sdk.evalsets import EvalItem

    q = "the proxy call session control function forwards every request of the user to the serving node"
    items = [EvalItem("hit", q, ["S-CSCF"]), EvalItem("clean", "What is RTP used for in a call?", ["media"])]
    shares = contamination(items, ["intro. " + q + " and more text"], n=8)
    assert shares["clean"] == 0.0
    assert 0.5 < shares["hit"] < 1.0  # the question's 8-grams are in the corpus, those reaching into the answer are not


def test_cli_check_reports_file_line_and_exit_code(tmp_path: Path) -> None:
    f = write(tmp_path / "e.jsonl", [{"id": "a", "question": "Which request starts a SIP call in IMS?", "answer": "INVITE"},
                                     {"id": "a", "question": "Which request ends a SIP call?", "answer": "BYE"}])
    train = write(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "Which request starts a SIP call in IMS?"},
                                                         {"role": "assistant", "content": "INVITE"}]}])
    r = run_dsl("eval-set", "check", str(f), "--train", str(train), "--ngram", "5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{f}:2: error: duplicate id 'a'" in r.stderr
    assert f"{f}:1: error: the question appears verbatim in the training data" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_dsl("eval-set", "check", str(f), "--json")
    data = json.loads(r.stdout)
    assert data["items"] == 2 and data["errors"] == 1


def test_cli_check_with_fields_and_bad_file(tmp_path: Path) -> None:
    t = tmp_path / "h.tsv"
    t.write_text("label\ttext\nYes\tA said B.\nYes\tC said D.\nYes\tE said F.\nNo\tG did H.\n")
    r = run_dsl("eval-set", "check", str(t), "--field", "question=text,answer=", "--field", "label=label")
    assert r.returncode == 0, r.stderr
    assert "label imbalance" in r.stdout and re.search(r"(?<!\d)4 items, 0 errors, 1 warnings", r.stdout)
    bad = write(tmp_path / "bad.jsonl", [{"question": "q", "answer": "x"}, "{oops"])
    r = run_dsl("eval-set", "check", str(bad))
    assert r.returncode != 0 and f"{bad}:2" in r.stderr and "malformed JSON" in r.stderr and "Traceback" not in r.stderr


def test_cli_check_from_a_recipe(tmp_path: Path) -> None:
    write(tmp_path / "eval.jsonl", [{"id": "x", "question": "What starts a call in SIP networks today?", "answer": "INVITE"}])
    write(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "What starts a call in SIP networks today?"},
                                                 {"role": "assistant", "content": "INVITE"}]}])
    (tmp_path / "r.dsl").write_text('domain d {\n  base_model m { id = "x/y" }\n  dataset qa { path = "sft.jsonl" }\n'
                                    '  eval expert {\n    data = "eval.jsonl"\n    systems = [base_model.m]\n  }\n}\n')
    r = run_dsl("eval-set", "check", "--spec", str(tmp_path / "r.dsl"), "--eval", "expert", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["errors"] == 1, r.stderr
    assert data["findings"][0]["message"] == "the question appears verbatim in the training data"
    assert data["train_files"] == [str(tmp_path / "sft.jsonl")]


def test_export_lm_eval_files(tmp_path: Path) -> None:
    from sdk.evalsets import EvalItem

    items = [EvalItem("1", "Q1?", ["b"], choices=["a", "b"]), EvalItem("2", "Q2?", ["a"], choices=["a", "b", "c"])]
    y = export_lm_eval(items, tmp_path / "out", "my_task")
    text = y.read_text()
    assert "output_type: multiple_choice" in text and 'target_delimiter: " "' in text and "task: my_task" in text
    rows = [json.loads(x) for x in (tmp_path / "out" / "my_task.jsonl").read_text().splitlines()]
    assert rows[0]["gold"] == 1 and rows[1]["choices"] == ["a", "b", "c"]
    assert rows[0]["prompt"] == "Question: Q1?\nAnswer:"
    cls = [EvalItem("1", "Q?", [], label="yes"), EvalItem("2", "R?", [], label="no")]
    export_lm_eval(cls, tmp_path / "cls", "c")
    rows = [json.loads(x) for x in (tmp_path / "cls" / "c.jsonl").read_text().splitlines()]
    assert rows[0]["choices"] == ["no", "yes"] and [r["gold"] for r in rows] == [1, 0]


def test_real_sets_map_without_code(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEQNA_PASSWORD", "teleqnadataset")
    tele = load_items(shared_data / "teleqna" / "TeleQnA.zip",
                      block(fields={"choices": "option *", "answer_pattern": r"option (\d+)"},
                            password=SecretRef(env="TELEQNA_PASSWORD")))
    assert len(tele) == 10000 and all(it.answers[0] in it.choices for it in tele)  # type: ignore[operator]
    assert not [f for f in check(tele) if f.severity == "error"]  # real items pass (a few repeat a choice: warnings)
    pub = load_items(shared_data / "pubmedqa" / "ori_pqal.json",
                     block(format="json", fields={"question": "QUESTION", "answer": None, "label": "final_decision",
                                                  "context": "CONTEXTS"}))
    assert len(pub) == 1000 and {it.label for it in pub} == {"yes", "no", "maybe"}
    hear = load_items(shared_data / "legalbench-hearsay" / "test.tsv",
                      block(fields={"question": "text", "answer": None, "label": "label"}))
    assert len(hear) == 95 and {it.label for it in hear} == {"Yes", "No"}


def test_dsl_plan_refuses_what_eval_set_check_calls_an_error(tmp_path: Path) -> None:
    """A duplicate id, accepted by the eval step (answers are stored by id) but an error of `dsl eval-set check`,
    stops `dsl plan` too, before anything runs, at the same line."""
    f = tmp_path / "eval.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "question": f"Q{n}?", "answer": "a"}) for n, i in
                           enumerate(["a", "b", "a"])) + "\n")
    r = run_dsl("eval-set", "check", str(f))
    assert r.returncode == 1 and "duplicate id 'a' (also on line 1)" in r.stdout + r.stderr
    (tmp_path / "notes.txt").write_text("x\n")
    (tmp_path / "r.dsl").write_text('domain t {\n  corpus c { paths = ["notes.txt"] }\n  rag r { corpus = corpus.c  '
                                    'retriever = bm25 }\n  eval e { data = "eval.jsonl"  systems = [rag.r]  metrics = '
                                    '[recall_at_k] }\n}\n')
    r = run_dsl("plan", "--backend", "test", "--workdir", str(tmp_path / "wd"), "r.dsl", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("r.dsl:4:19: error: eval.jsonl:3: duplicate id 'a' (also on line 1)"), r.stderr


def test_items_tagged_train_are_held_out_and_a_set_of_only_train_items_is_refused() -> None:
    from sdk.evalsets import EvalItem, scored_items

    items = [EvalItem(id=str(n), question="q", answers=["a"], tags=["train"] if n < 2 else []) for n in range(5)]
    scored, held = scored_items(items, "e.jsonl")
    assert [it.id for it in scored] == ["2", "3", "4"] and held == 2
    with pytest.raises(DataError) as e:
        scored_items(items[:2], "e.jsonl")
    assert "e.jsonl" in str(e.value) and "none is left to score" in str(e.value)
