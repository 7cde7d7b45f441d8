"""Review decisions (sdk.reviews): the append-only log beside the recipe, its located errors, the review policies,
one edit applied to every row a search matches; and `dsl review export` / `dsl review import` through JSONL and
CSV files (sdk.reviewio) against a hand-made applied synth step (tests/_review_data.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from sdk import reviews as RV
from sdk.errors import DataError, DslError
from tests._review_data import applied_synth, candidate_rows


def decision(rid: str, what: str, **kw: Any) -> dict[str, Any]:
    return {"id": rid, "decision": what, "reviewer": kw.pop("reviewer", "ana"), "at": "2026-12-05T14:00:00Z", **kw}


def dsl(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    from dsl.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- the log


def test_decisions_live_beside_the_recipe_and_the_last_line_wins(tmp_path: Path) -> None:
    recipe = tmp_path / "r.dsl"
    recipe.write_text("")
    path = RV.decisions_path(recipe, "telecom", "synth.ops")
    assert path == tmp_path / "reviews" / "telecom" / "ops.jsonl" == RV.decisions_path(tmp_path, "telecom", "ops")
    with pytest.raises(DslError, match="cannot name a decisions file"):
        RV.decisions_path(recipe, "telecom", "../x")
    assert RV.load(path) == {}
    assert RV.append(path, [decision("a", "accept"), decision("b", "reject", reason="wrong")]) == 2
    RV.append(path, [decision("a", "edit", fields={"answer": "INVITE"}, reviewer="bo")])
    got = RV.load(path)
    assert got["a"]["decision"] == "edit" and got["a"]["reviewer"] == "bo" and got["b"]["reason"] == "wrong"
    assert [e["decision"] for e in RV.history(path)] == ["accept", "reject", "edit"]  # history kept
    path.write_text(path.read_text().rstrip("\n"))  # a hand edit dropped the last newline
    RV.append(path, [decision("c", "accept")])
    assert set(RV.load(path)) == {"a", "b", "c"}


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "decision": "maybe", "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}', "decision: Input should be"),
    ('{"id": "a", "decision": "edit", "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}', "an edit needs fields"),
    ('{"id": "a", "decision": "accept", "reviewer": "ana", "at": "yesterday"}', "at: String should match"),
    ('{"id": "a", "decision": "accept", "at": "2026-12-05T14:00:00Z"}', "reviewer: Field required"),
    ('{"id": "a", "decision": "edit", "fields": {"chunk": "x"}, "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}',
     "fields chunk cannot be edited"),
    ('{"id": 7, "decision": "accept", "reviewer": "ana", "at": "2026-12-05T14:00:00Z"}', "id: Input should be"),
    ('{"id": "a", "decision": "accept"', "malformed JSON"),
])
def test_a_bad_line_is_a_located_error(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "ops.jsonl"
    path.write_text(json.dumps(decision("ok", "accept")) + "\n\n" + line + "\n")
    with pytest.raises(DataError) as e:
        RV.load(path)
    assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value), str(e.value)


def test_append_validates_everything_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "reviews" / "d" / "ops.jsonl"
    with pytest.raises(DataError, match="reject"):
        RV.append(path, [decision("a", "accept"), decision("b", "reject", fields={"answer": "x"})])
    assert not path.exists()
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(DslError, match="symbolic link"):
        RV.append(link, [decision("a", "accept")])
    assert not (tmp_path / "elsewhere.jsonl").exists()


# ------------------------------------------------------------------------------------ policies and edits


def test_apply_follows_the_review_policy() -> None:
    rows = candidate_rows()
    ids = [r["id"] for r in rows]
    decisions = {ids[0]: decision(ids[0], "accept"), ids[1]: decision(ids[1], "reject", reason="off topic"),
                 ids[2]: decision(ids[2], "edit", fields={"answer": "The HSS."})}
    for policy in ("none", "optional"):
        kept, dropped = RV.apply(rows, decisions, policy)
        assert [r["id"] for r in kept] == [ids[0], ids[2], ids[3], ids[4]]
        assert kept[1]["answer"] == "The HSS." and rows[2]["answer"] == "The HSS stores subscribers."
        assert dropped == [{"id": ids[1], "reason": "review_rejected",
                            "detail": "rejected by ana at 2026-12-05T14:00:00Z: off topic"}]
    kept, dropped = RV.apply(rows, decisions, "required")
    assert [r["id"] for r in kept] == [ids[0], ids[2]]
    assert [(d["id"], d["reason"]) for d in dropped] == [(ids[1], "review_rejected"), (ids[3], "review_pending"),
                                                         (ids[4], "review_pending")]
    assert len(kept) + len(dropped) == len(rows)
    assert RV.counts(rows, decisions) == {"pending": 2, "accepted": 1, "rejected": 1, "edited": 1}
    with pytest.raises(DslError, match="not one of"):
        RV.apply(rows, decisions, "sometimes")


def test_one_edit_applies_to_every_row_a_search_matches() -> None:
    rows = candidate_rows()
    ids = [r["id"] for r in rows]
    decisions = {ids[1]: decision(ids[1], "reject"), ids[3]: decision(ids[3], "edit", fields={"question": "Who "
                                                                                              "handles SIP registration?"})}
    assert len(RV.matching(rows, decisions, "sip")) == 4  # case-insensitive, question or answer
    entries = RV.edit_matching(rows, decisions, "SIP", "Session Initiation Protocol", reviewer="ana",
                               reason="spell it out", at="2026-12-05T15:00:00Z")
    assert sorted(e["id"] for e in entries) == [ids[0], ids[3], ids[4]]  # the rejected row stays rejected
    assert all(e["decision"] == "edit" and e["reason"] == "spell it out" and e["reviewer"] == "ana" for e in entries)
    by = {e["id"]: e["fields"] for e in entries}
    assert by[ids[0]] == {"question": "Which Session Initiation Protocol request starts a call?",
                          "answer": "INVITE starts a Session Initiation Protocol call."}
    # the earlier edit of row 3 is kept and edited further; fields the search did not touch stay out
    assert by[ids[3]] == {"question": "Who handles Session Initiation Protocol registration?",
                          "answer": "The S-CSCF handles Session Initiation Protocol registration."}
    regex = RV.edit_matching(rows, {}, r"(\w+)-CSCF", r"\1 CSCF", reviewer="ana", regex=True)
    assert {e["fields"]["answer"] for e in regex} == {"The S CSCF handles SIP registration.", "The P CSCF."}
    assert RV.edit_matching(rows, {}, r"\1", "x", reviewer="ana") == []  # a literal search: no group, no match
    with pytest.raises(DslError, match="not a valid regular expression"):
        RV.matching(rows, {}, "(", regex=True)
    with pytest.raises(DslError, match="empty"):
        RV.edit_matching(rows, {}, "", "x", reviewer="ana")


# ------------------------------------------------------------------------------------ dsl review export/import


def test_export_then_import_a_filled_csv_appends_only_the_changed_rows(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    fx = applied_synth(tmp_path)
    ids = [r["id"] for r in fx["rows"]]
    RV.append(fx["decisions"], [decision(ids[0], "accept"), decision(ids[4], "reject", reason="vague")])
    out = tmp_path / "ops.csv"
    code, stdout, err = dsl(capsys, "review", "export", str(fx["recipe"]), "ops", "-o", str(out))
    assert code == 0, err
    assert "5 rows of synth.ops (3 pending, 1 accepted, 1 rejected, 0 edited)" in stdout
    with out.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["id"] for r in records] == ids
    assert records[0]["status"] == "accepted" and records[4]["decision"] == "reject" and records[4]["reason"] == "vague"
    assert records[2]["chunk"] == "The HSS stores subscribers." and records[2]["source"] == "docs/sip.txt:3"
    records[1].update(decision="reject", reason="duplicate")
    records[2].update(edited_answer="The HSS.", reason="shorter")
    records[3].update(decision="accept")
    records[4]["answer"] = records[4]["answer"] + "\r\n"  # a spreadsheet's line ending is no change
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    code, stdout, err = dsl(capsys, "review", "import", str(fx["recipe"]), "synth.ops", str(out), "--reviewer", "bo",
                            "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["appended"] == 3 and result["unchanged"] == 2
    assert result["by_decision"] == {"reject": 1, "edit": 1, "accept": 1}
    assert result["by_status"] == {"pending": 0, "accepted": 2, "rejected": 2, "edited": 1}
    got = RV.load(fx["decisions"])
    assert got[ids[2]] == {"id": ids[2], "decision": "edit", "fields": {"answer": "The HSS."}, "reason": "shorter",
                           "reviewer": "bo", "at": got[ids[2]]["at"]}
    assert got[ids[0]]["reviewer"] == "ana" and len(RV.history(fx["decisions"])) == 5
    code, stdout, _ = dsl(capsys, "review", "import", str(fx["recipe"]), "ops", str(out), "--reviewer", "bo")
    assert code == 0 and "0 decisions changed (none), 5 unchanged" in stdout  # importing twice changes nothing


def test_import_checks_every_line_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fx = applied_synth(tmp_path)
    out = tmp_path / "ops.jsonl"
    code, stdout, err = dsl(capsys, "review", "export", str(fx["recipe"]), "ops", "-o", str(out), "--json")
    assert code == 0 and json.loads(stdout)["rows"] == 5, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["edited_question"] == "" and lines[0]["status"] == "pending"
    cases = [(0, {"decision": "accept"}, 1, {"decision": "perhaps"}, "decision 'perhaps' is not accept"),
             (0, {"decision": "reject"}, 3, {"id": "nope"}, "no candidate row has id 'nope'"),
             (0, {"decision": "reject"}, 2, {"answer": "changed in place"}, "put the new text in edited_answer"),
             (0, {"decision": "reject"}, 4, {"decision": "accept", "edited_answer": "x"}, "set the decision to edit"),
             (0, {"decision": "reject"}, 2, {"decision": "edit"}, "no edited_ cell holds text"),
             (0, {"decision": "reject"}, 1, {"colour": "red"}, "unknown column 'colour'")]
    for first, good, n, bad, message in cases:
        rows = [dict(x) for x in lines]
        rows[first].update(good)
        rows[n].update(bad)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        code, _, err = dsl(capsys, "review", "import", str(fx["recipe"]), "ops", str(out), "--reviewer", "bo")
        assert code == 1 and f"{out}:{n + 1}:" in err and message in err and "Traceback" not in err, err
        assert not fx["decisions"].exists()  # the good first line was not written either
    rows = [dict(x) for x in lines]
    rows[1]["decision"] = "accept"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = dsl(capsys, "review", "import", str(fx["recipe"]), "ops", str(out))
    assert code == 1 and f"{out}:2:" in err and "a changed decision needs a reviewer" in err
    code, _, err = dsl(capsys, "review", "export", str(fx["recipe"]), "nope", "-o", str(tmp_path / "x.csv"))
    assert code == 1 and "no synth step 'nope'" in err and "have: ops" in err
    code, _, err = dsl(capsys, "review", "export", str(fx["recipe"]), "ops", "-o", str(tmp_path / "x.xlsx"))
    assert code == 1 and ".jsonl or .csv" in err


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_and_read_back(tmp_path: Path) -> None:
    from sdk import reviewio as IO

    rows = [{**candidate_rows()[0], "answer": '=HYPERLINK("http://x")'}, candidate_rows()[1]]
    out = tmp_path / "x.csv"
    IO.export_rows(out, rows, {})
    with out.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert records[0]["answer"] == "'=HYPERLINK(\"http://x\")"  # a spreadsheet shows it as text
    records[1].update(decision="edit", edited_answer="'-1 dBm")  # what the expert's spreadsheet saves
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    result = IO.read_import(out, rows, {}, reviewer="ana")  # the quoted formula reads back unchanged
    assert [(e["id"], e["decision"], e["fields"]) for e in result["entries"]] == [
        (rows[1]["id"], "edit", {"answer": "-1 dBm"})]


def test_a_changed_decision_makes_the_plan_replace_the_synth_step(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    import sdk
    from sdk.loaders import load

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sip.txt").write_text("An INVITE request starts a SIP call.\nBYE ends a SIP call.\n")
    recipe = tmp_path / "r.dsl"
    recipe.write_text('domain rev {\n  corpus c { paths = ["docs/*.txt"]  min_chars = 5  split = { by = line, '
                      'length = 1, overlap = 0 } }\n  synth ops { task = qa  corpus = corpus.c  teacher = endpoint '
                      '{ url = "http://127.0.0.1:9/v1", model = "t" }  rows = 2  review = required }\n}\n')
    path = RV.decisions_path(recipe, "rev", "ops")

    def plan() -> dict[str, str]:
        code, out, err = dsl(capsys, "plan", str(recipe), "--backend", "test", "--skip-checks", "--json")
        assert code == 0, err
        return {s["id"]: s["action"] for s in json.loads(out)["steps"]}

    RV.append(path, [decision("a", "accept")])
    assert sdk.apply(load(recipe), backend="test").ok
    assert plan() == {"corpus.c": "noop", "synth.ops": "noop"}
    RV.append(path, [decision("a", "reject", reason="wrong")])
    assert plan() == {"corpus.c": "noop", "synth.ops": "replace"}  # the decisions file is an input of the step
