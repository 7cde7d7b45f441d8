"""Expert grades: the store beside the recipe, agreement figures against known values, human metrics that wait for
their grades (a pending gate, never a failed one), answers reused when only grades changed, and a judge gate
refused until the judge agrees with the experts (at plan time when the plan can know it, at apply otherwise)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdk import grades as G
from sdk.errors import DataError, DslError
from tests._openai_server import OpenAIServer, chat_completion

# ------------------------------------------------------------------------------------------- agreement figures


def test_cohen_kappa_on_the_textbook_table() -> None:
    # 50 proposals, two readers: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert G.cohen_kappa(a, b) == pytest.approx(0.4)
    c = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]  # 9 of 12 agree; marginals 7/5 and 6/6 -> p_e 0.5, kappa 0.5
    d = [1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0]  # (sklearn's cohen_kappa_score gives the same)
    assert G.cohen_kappa(c, d) == pytest.approx(0.5)
    assert G.cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0 and G.cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_krippendorff_alpha_matches_the_package_example() -> None:
    n = None  # the krippendorff package's README table (three coders, 15 units, nominal alpha 0.691)
    table = [[n, n, n, n, n, 3, 4, 1, 2, 1, 1, 3, 3, n, 3],
             [1, n, 2, 1, 3, 3, 4, 3, n, n, n, n, n, n, n],
             [n, n, 2, 1, 3, 4, 4, n, 2, 1, 1, 3, 3, n, 4]]
    assert G.krippendorff_alpha(table) == pytest.approx(0.691, abs=1e-3)


def _grade(item: str, text: str, grader: str, ok: bool, system: str = "rag.a") -> dict[str, Any]:
    return {"item": item, "answer": G.answer_hash(text), "system": system, "grader": grader,
            "verdict": "pass" if ok else "fail", **({} if ok else {"category": "wrong_fact"})}


def test_store_round_trip_last_line_wins_and_agreement(tmp_path: Path) -> None:
    path = G.grades_path(tmp_path / "r.dsl", "t", "mc")
    assert path == tmp_path / "grades" / "t" / "mc.jsonl"
    ann = [True, True, False, True, False, False]
    bob = [True, False, False, True, False, True]
    G.append(path, [_grade(f"q{i}", "x", "ann", v) for i, v in enumerate(ann)])
    G.append(path, [_grade(f"q{i}", "x", "bob", not v) for i, v in enumerate(bob)])
    G.append(path, [_grade(f"q{i}", "x", "bob", v) for i, v in enumerate(bob)])  # bob's second thoughts win
    rows = G.load(path)
    assert len(rows) == 18 and all(r["at"].endswith("Z") for r in rows)
    agree = G.expert_agreement(rows)
    assert agree["graders"] == ["ann", "bob"] and agree["units"] == 6
    assert agree["kappa"] == pytest.approx(G.cohen_kappa(ann, bob), abs=1e-4)
    import krippendorff
    import numpy as np

    expected = krippendorff.alpha(reliability_data=np.array([ann, bob], dtype=float), level_of_measurement="nominal")
    assert agree["alpha"] == pytest.approx(expected, abs=1e-4)
    G.append(path, [_grade("q0", "x", "cy", True)])  # a third grader: alpha only
    assert "kappa" not in G.expert_agreement(G.load(path)) and "alpha" in G.expert_agreement(G.load(path))
    with pytest.raises(ValueError, match="verdict"):
        G.append(path, [{**_grade("q9", "x", "ann", True), "verdict": "maybe"}])
    with open(path, "a") as f:
        f.write('{"item": "q1", "grader": "ann"}\n')
    with pytest.raises(DataError) as e:
        G.load(path)
    assert str(e.value).startswith(f"{path}:20: 'answer' must be the 16-hex hash")


def test_judge_agreement_rates() -> None:
    grades = [_grade(f"q{i}", "x", "ann", i < 6) for i in range(10)]  # experts: q0-q5 pass, q6-q9 fail
    judge = {(f"q{i}", G.answer_hash("x")): (1.0 if i < 5 or i == 9 else 0.0) for i in range(10)}
    agree = G.judge_agreement(judge, grades)
    assert agree["n"] == 10 and agree["tpr"] == pytest.approx(5 / 6, abs=1e-4) and agree["tnr"] == 0.75
    assert agree["kappa"] == pytest.approx(G.cohen_kappa([i < 6 for i in range(10)],
                                                        [i < 5 or i == 9 for i in range(10)]), abs=1e-4)
    ok, why = G.trust_verdict(agree, 0.6, 50)
    assert not ok and "10 answers in common, fewer than the 50" in why
    ok, why = G.trust_verdict(agree, 0.9, 5)
    assert not ok and "below the 0.9" in why


def test_pairwise_preferences_give_human_pref_against_the_first_system(tmp_path: Path) -> None:
    from types import SimpleNamespace as NS

    from sdk.backends.eval.human import human_results

    block = NS(human=NS(mode="pairwise", graders=1, min_items=None), metrics=["exact_match"], bootstrap=200,
               confidence=0.95, seed=0, judge_agreement=None, gate=None)
    spec = NS(base_dir=tmp_path, name="t")
    rows = {"rag.a": [{"id": f"q{i}", "prediction": f"a{i}"} for i in range(6)],
            "rag.b": [{"id": f"q{i}", "prediction": f"b{i}" if i < 5 else "a5"} for i in range(6)]}  # q5: same text
    h = {sid: [G.answer_hash(r["prediction"]) for r in rs] for sid, rs in rows.items()}
    prefer = [h["rag.b"][0], h["rag.b"][1], h["rag.b"][2], "tie"]  # q0-q2 b wins, q3 a tie, q4 not graded yet
    G.append(G.grades_path(tmp_path, "t", "mc"), [{"item": f"q{i}", "answers": sorted([h["rag.a"][i], h["rag.b"][i]]),
                                                   "prefer": p, "grader": "ann"} for i, p in enumerate(prefer)])
    out = human_results(spec, block, "mc", rows)
    cell = out["results"]["rag.b"]["human_pref"]
    assert cell["value"] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5) and cell["n"] == 5  # the same text: a tie
    assert 0 < cell["p_value"] <= 1 and out["comparisons"]["rag.b"]["human_pref"]["difference"] == pytest.approx(0.3)
    assert out["summary"]["status"] == "awaiting 1 of 6 grades" and "rag.a" not in out["results"]


# ------------------------------------------------------------------------------------------- in the recipe

ITEMS = [("q1", "Which SIP request starts a call?", "INVITE"), ("q2", "Which request ends a call?", "BYE"),
         ("q3", "What carries the media?", "RTP"), ("q4", "What stores subscriber profiles?", "HSS")]


def _recipe(folder: Path, port: int, extra: str) -> Path:
    (folder / "docs").mkdir(exist_ok=True)
    (folder / "docs" / "sip.txt").write_text("A SIP call starts with INVITE and ends with BYE; RTP carries media.\n")
    (folder / "eval.jsonl").write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n"
                                               for i, q, a in ITEMS))
    ep = f'url = "http://127.0.0.1:{port}/v1", max_retries = 0'
    (folder / "r.dsl").write_text(f'''domain t {{
  corpus c {{ paths = ["docs/*.txt"] }}
  rag a {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = endpoint {{ {ep}, model = "good" }} }}
  rag b {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = endpoint {{ {ep}, model = "bad" }} }}
  eval mc {{
    data = "eval.jsonl"
    metrics = [exact_match, judge]
    systems = [rag.a, rag.b]
    judge = endpoint {{ {ep}, model = "judge" }}
    bootstrap = 100
    contamination = false
{extra}
  }}
}}
''')
    return folder / "r.dsl"


@pytest.fixture
def server() -> Iterator[tuple[OpenAIServer, list[str]]]:
    asked: list[str] = []
    answers = {q: a for _, q, a in ITEMS}

    def handler(body: dict[str, Any], request: Any) -> Any:
        text = body["messages"][-1]["content"]
        if body["model"] == "judge":  # the judge passes a right answer
            return chat_completion("1" if "Answer to grade: I do not know" in text else "5", model="judge")
        asked.append(body["model"])
        q = next(q for q in answers if q in text)
        return chat_completion(answers[q] if body["model"] == "good" else "I do not know", model=body["model"])

    with OpenAIServer(handler) as s:
        yield s, asked


def _apply(path: Path) -> Any:
    import sdk
    from dsl.parser import load

    return sdk.apply(load(path))


def _summary(folder: Path) -> dict[str, Any]:
    from sdk.state import StateStore

    entry = StateStore(folder / ".dsl" / "t").load().steps["eval.mc"]
    return {**entry, "summary_json": json.loads((folder / ".dsl" / "t" / entry["artifact"] / "summary.json").read_text())}


def _grade_all(folder: Path, grader: str, judge_right: bool) -> None:
    """Grade every answer of the last run: right answers pass (or, ``judge_right`` false, everything passes)."""
    run = _summary(folder)["artifact"]
    rows = [json.loads(x) for x in (folder / ".dsl" / "t" / run / "predictions.jsonl").read_text().splitlines()]
    G.append(G.grades_path(folder, "t", "mc"), [_grade(r["id"], r["prediction"], grader,
                                                        bool(r["correct"]) or not judge_right, r["system"])
                                                 for r in rows])


@pytest.mark.slow
def test_human_gate_pending_then_decided_and_answers_reused(tmp_path: Path, server: Any) -> None:
    srv, asked = server
    path = _recipe(tmp_path, srv.port, "    human = { mode = pass_fail, graders = 2 }\n"
                                       "    gate = rag.a.human_pass >= 0.75 and rag.a.exact_match >= 0.5")
    result = _apply(path)
    assert result.ok, [o.error for o in result.failed]
    first = _summary(tmp_path)
    assert first["status"] == "done" and "awaiting 4 of 4 grades; gate pending" in first["summary"]
    assert first["summary_json"]["gate"]["pending"] is True
    report = (tmp_path / ".dsl" / "t" / first["artifact"] / "report.md").read_text()
    assert "PENDING (pending: awaiting 4 of 4 grades)" in report
    from sdk.promotion import promotion
    from sdk.state import StateStore

    promo = promotion(StateStore(tmp_path / ".dsl" / "t").load().steps)["rag.a"]  # never "passed" while pending
    assert promo["promoted"] is False and promo["reason"] == "gate of eval.mc pending: awaiting 4 of 4 grades"
    calls = len(asked)
    assert calls == 8  # 4 items x 2 systems
    _grade_all(tmp_path, "ann", judge_right=True)
    _grade_all(tmp_path, "bob", judge_right=True)
    result = _apply(path)
    assert result.ok and len(asked) == calls  # the grades changed, the answers did not: none asked again
    second = _summary(tmp_path)
    assert second["fingerprint"] != first["fingerprint"]
    m = second["metrics"]
    assert m["rag.a"]["human_pass"]["value"] == 1.0 and m["rag.b"]["human_pass"]["value"] == 0.0
    assert m["rag.b"]["human_pass"]["p_value"] < 0.1
    assert m["human"]["awaiting"] == 0 and m["human"]["agreement"]["kappa"] == 1.0
    assert m["human"]["judge"]["kappa"] == 1.0 and m["human"]["judge"]["tpr"] == 1.0
    assert second["summary_json"]["gate"]["passed"] is True and "pending" not in second["summary_json"]["gate"]
    assert promotion(StateStore(tmp_path / ".dsl" / "t").load().steps)["rag.a"]["promoted"] is True
    report = (tmp_path / ".dsl" / "t" / second["artifact"] / "report.md").read_text()
    assert "2 graders agree at Cohen's kappa 1.0, Krippendorff's alpha 1.0" in report


@pytest.mark.slow
def test_judge_gate_refused_at_plan_then_at_apply_then_trusted(tmp_path: Path, server: Any) -> None:
    srv, _ = server
    gate = "    gate = rag.a.judge >= 0.5\n"
    path = _recipe(tmp_path, srv.port, gate)
    with pytest.raises(DslError) as e:
        _apply(path)
    assert "r.dsl:12:" in str(e.value) and "eval.mc has no human grading" in str(e.value)
    human = "    human = { mode = pass_fail }\n    judge_agreement = { kappa = 0.6, min_items = 8 }\n"
    path = _recipe(tmp_path, srv.port, human + gate)
    with pytest.raises(DslError) as e:
        _apply(path)
    assert "grades/t/mc.jsonl holds no grades yet" in str(e.value)
    path = _recipe(tmp_path, srv.port, human)  # apply without the gate, so there are answers to grade
    assert _apply(path).ok
    _grade_all(tmp_path, "ann", judge_right=False)  # the experts pass everything: the judge disagrees
    ok, why = G.judge_trusted(path, _load(path), "mc")
    assert not ok and "kappa 0.0 on 8 answers, below the 0.6" in why
    spec = _load(path)  # a reward or synth filter using the same judge is refused too; another judge is uncalibrated
    assert G.judge_standing(path, spec, spec.eval["mc"].judge) == (False, why)
    other = spec.eval["mc"].judge.model_copy(update={"model": "other"})
    assert G.judge_standing(path, spec, other)[0] and "not calibrated" in G.judge_standing(path, spec, other)[1]
    path = _recipe(tmp_path, srv.port, human + gate)
    result = _apply(path)
    assert not result.ok or _summary(tmp_path)["status"] == "gate_failed"
    assert "the judge is not trusted" in _summary(tmp_path)["error"]
    _grade_all(tmp_path, "ann", judge_right=True)  # the experts change their minds: the judge now agrees
    assert _apply(path).ok
    assert _summary(tmp_path)["status"] == "done"
    assert G.judge_trusted(path, _load(path), "mc")[0]
    assert G.judge_standing(path, _load(path), _load(path).eval["mc"].judge)[0]


def _load(path: Path) -> Any:
    from dsl.parser import load

    return load(path)


def test_a_gate_on_a_human_metric_no_eval_grades_is_a_plan_error(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 9, "    gate = rag.a.human_pass >= 0.8")
    with pytest.raises(DslError) as e:
        _load(path)
    assert "r.dsl:12:" in str(e.value) and "no eval with human = { mode = pass_fail } lists rag.a" in str(e.value)
    path = _recipe(tmp_path, 9, "    human = { mode = pairwise }\n    gate = rag.a.human_pref >= 0.5")
    with pytest.raises(DslError) as e:  # the first system is what the others are preferred to
        _load(path)
    assert "compares rag.a with its first system" in str(e.value)
    _recipe(tmp_path, 9, "    human = { mode = pairwise }\n    gate = rag.b.human_pref.ci_low > 0.5")
    assert _load(path).eval["mc"].human.mode == "pairwise"


def test_the_judge_threshold_has_one_source_the_eval_blocks_judge_agreement() -> None:
    from types import SimpleNamespace

    from sdk.spec.blocks.eval import JudgeAgreement

    assert G.judge_rule(SimpleNamespace(judge_agreement=None)) == (0.6, 50, True)  # the default
    assert (JudgeAgreement().kappa, JudgeAgreement().min_items) == (0.6, 50)  # the block's defaults are the same
    kappa, need, required = G.judge_rule(SimpleNamespace(judge_agreement=JudgeAgreement(kappa=0.8, min_items=20)))
    assert (kappa, need, required) == (0.8, 20, True)
    ok, why = G.trust_verdict({"kappa": 0.7, "n": 30, "tpr": 0.9, "tnr": 0.9}, kappa, need)
    assert ok is False and "below the 0.8 judge_agreement asks" in why
