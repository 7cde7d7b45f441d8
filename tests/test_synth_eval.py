"""``eval { data = synth.X }`` and the synth filters' judge, against the scripted OpenAI-compatible server of
tests/test_synth.py: the eval scores only the candidates experts accepted or edited (the edit winning), awaits
review with nothing accepted, re-runs when a decision changes the kept rows and only then; a training synth step
drops rows that overlap accepted items; the judge drops rows under judge_min, journaled, and is refused (at plan
time, located, and when the step runs) until an eval with human grading has calibrated it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import sdk
from dsl.parser import load
from sdk import reviews as RV
from sdk.errors import SpecError
from sdk.spec import Ref
from sdk.state import StateStore
from sdk.systems import applied_block, applied_eval_items
from sdk.workspace import open_workspace
from tests._openai_server import OpenAIServer, chat_completion
from tests.test_synth import NOTES, Teacher, write


class Server:
    """One scripted server for every role, by model name: ``teach`` (tests/test_synth.py's teacher), ``sys`` (a
    system under eval: it answers "What is true of X?" with X.), ``judge`` (5 for a passage about SIP or codecs,
    else 2)."""

    def __init__(self) -> None:
        self.teacher = Teacher()
        self.judged: list[str] = []
        self.answered: list[str] = []  # the questions the system under eval was asked

    def __call__(self, body: dict[str, Any], request: Any) -> Any:
        prompt = body["messages"][-1]["content"]
        if body["model"] == "sys":
            self.answered.append(prompt)
            m = re.search(r"What is true of (.+?)\?", prompt)
            return chat_completion((m.group(1) + ".") if m else "no idea", model="sys")
        if body["model"] == "judge":
            self.judged.append(prompt)
            return chat_completion("5: right" if re.search(r"SIP|codec", prompt) else "2: weak", model="judge")
        return self.teacher(body, request)


EVAL_SYNTH = """  synth cands { task = eval  corpus = corpus.notes  teacher = TEACHER  rows = 4  review = required
               filters = { contamination = false } }
  synth qa { corpus = corpus.notes  teacher = TEACHER }
  eval ops { data = synth.cands  systems = [endpoint { url = "URL", model = "sys" }]  metrics = [exact_match]
             ngram = 5 }"""


def decide(folder: Path, *entries: tuple[str, str, dict[str, str] | None]) -> None:
    RV.append(RV.decisions_path(folder / "r.dsl", "t", "cands"), [
        {"id": i, "decision": d, **({"fields": f} if f else {}), "reviewer": "ana", "at": "2026-12-06T00:00:00Z"}
        for i, d, f in entries])


def steps(folder: Path) -> dict[str, Any]:
    return StateStore(folder / ".dsl" / "t").load().steps


def art(folder: Path, step: str) -> Path:
    return folder / ".dsl" / "t" / steps(folder)[step]["artifact"]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_an_eval_scores_the_candidates_experts_accepted(tmp_path: Path) -> None:
    server = Server()
    with OpenAIServer(server) as http:
        url = f"http://127.0.0.1:{http.port}/v1"
        path = write(tmp_path, http.port, EVAL_SYNTH.replace("URL", url))
        first = sdk.apply(load(path))
        assert not first.ok and "eval.ops" not in {k for k, v in steps(tmp_path).items() if v["status"] == "done"}
        failed = next(o for o in first.outcomes if o.id == "eval.ops")
        assert failed.status == "failed" and "awaiting review: 0 of 4 candidates of synth.cands accepted (4 pending)" \
            in failed.error and "Review view of dsl ui" in failed.error
        assert not list((tmp_path / ".dsl" / "t" / "artifacts").glob("eval.ops/*/manifest.json"))  # nothing written

        cands = lines(art(tmp_path, "synth.cands") / "candidates.jsonl")
        a, e, r, p = (c["id"] for c in cands)
        decide(tmp_path, (a, "accept", None), (e, "edit", {"answer": "Edited by ana."}), (r, "reject", None))
        asked = len(server.teacher.prompts)
        assert sdk.apply(load(path)).ok
        st = steps(tmp_path)["eval.ops"]
        assert st["metrics"]["n_items"] == 2 and "2 of 4 candidates of synth.cands accepted (1 rejected, 1 pending)" \
            in st["summary"]
        preds = {x["id"]: x for x in lines(art(tmp_path, "eval.ops") / "predictions.jsonl")}
        assert set(preds) == {a, e} and preds[e]["gold"] == "Edited by ana."  # the edited text is the reference
        assert preds[a]["scores"]["exact_match"] == 1.0 and preds[e]["scores"]["exact_match"] == 0.0
        assert st["metrics"]["contaminated_items"] == 2  # the items are corpus text, which the system's data holds
        applied = applied_block(open_workspace(path).artifact("eval.ops"))  # its manifest names the step, no file
        assert isinstance(applied.data, Ref) and str(applied.data) == "synth.cands"
        drops = json.loads((art(tmp_path, "synth.qa") / "ledger.json").read_text())["dropped"]
        assert sorted(d["eval_item"] for d in drops if d["reason"] == "contamination") == sorted(
            [f"eval.ops:{a}", f"eval.ops:{e}"])  # training rows never teach an accepted eval item

        assert len(server.answered) == 2
        decide(tmp_path, (p, "accept", None))  # one more accepted: the eval (and the training rows) re-run
        plan = {s.id: s.action.value for s in sdk.plan(load(path)).steps}
        assert plan["synth.cands"] == "replace" and plan["corpus.notes"] == "noop"
        again = sdk.apply(load(path))
        assert again.ok and {"synth.cands", "eval.ops", "synth.qa"} <= set(again.ran)
        assert steps(tmp_path)["eval.ops"]["metrics"]["n_items"] == 3
        assert len(server.answered) == 3  # only the newly accepted item was asked: the two others' answers reused
        preds = {x["id"]: x for x in lines(art(tmp_path, "eval.ops") / "predictions.jsonl")}
        assert preds[e]["gold"] == "Edited by ana." and preds[e]["scores"]["exact_match"] == 0.0
        decide(tmp_path, (e, "edit", {"question": f"What is true of {cands[1]['answer'].rstrip('.')}?"}))
        assert sdk.apply(load(path)).ok and len(server.answered) == 4  # an edited item is asked again, alone
        # what a route's eval_sets and a rag's adapt pairs read of this eval: the accepted items, not a file synth.cands
        _, items, shown = applied_eval_items(open_workspace(path).artifact("eval.ops"), tmp_path)
        assert sorted(it.id for it in items) == sorted([a, e, p]) and shown == "synth.cands/rows.jsonl"

        decide(tmp_path, (r, "reject", None))  # the same decision again: the kept rows are the same
        same = sdk.apply(load(path))
        assert same.ok and "synth.cands" in same.ran and "eval.ops" not in same.ran and "synth.qa" not in same.ran
        assert len(server.teacher.prompts) == asked  # every re-run answered from the journal


@pytest.mark.parametrize("body, message, hint", [
    ("  synth cands { corpus = corpus.notes  teacher = TEACHER  review = required }",
     r"synth\.cands makes qa rows \(task = qa\), not eval items",
     "write task = eval and review = required in synth.cands"),
    ("  synth cands { task = eval  corpus = corpus.notes  teacher = TEACHER }",
     r"synth\.cands has review = none: an eval scores only the candidates an expert accepted or edited",
     "write review = required in synth.cands"),
])
def test_an_eval_over_a_synth_step_that_is_not_reviewed_eval_items_is_a_located_error(
        tmp_path: Path, body: str, message: str, hint: str) -> None:
    path = write(tmp_path, 9, body + '\n  eval ops { data = synth.cands  systems = [rag.ctx] }')
    with pytest.raises(SpecError) as e:
        load(path)
    assert re.search(r"r\.dsl:5:\d+: error: " + message, str(e.value)) and hint in str(e.value), str(e.value)


JUDGED = """  synth qa { corpus = corpus.notes  teacher = TEACHER  concurrency = 3
             filters = { contamination = false, judge = endpoint { url = "URL", model = "judge" }, judge_min = 0.75
                         JUDGE_AGREEMENT } }"""


def test_a_judge_filter_drops_rows_under_judge_min_journaled(tmp_path: Path) -> None:
    server = Server()
    with OpenAIServer(server) as http:
        url = f"http://127.0.0.1:{http.port}/v1"
        path = write(tmp_path, http.port, JUDGED.replace("URL", url).replace(
            "JUDGE_AGREEMENT", "judge_agreement = { required = false }"))
        logs: list[str] = []
        assert sdk.apply(load(path), log=logs.append).ok
        assert any("used without expert calibration" in x for x in logs)
        assert sdk.apply(load(path), replace=["synth.qa"]).ok
    st = steps(tmp_path)["synth.qa"]
    ledger = json.loads((art(tmp_path, "synth.qa") / "ledger.json").read_text())
    judged = {d["id"]: d["detail"] for d in ledger["dropped"] if d["reason"] == "judge"}
    kept = {c["chunk"] for c in lines(art(tmp_path, "synth.qa") / "candidates.jsonl")}
    assert kept == {NOTES["sip"], NOTES["codec"]} and len(judged) == len(NOTES) - 2
    assert set(judged.values()) == {"judge score 0.25 under judge_min = 0.75"}
    assert ledger["in"] == ledger["out"] + len(ledger["dropped"]) and st["metrics"]["by_reason"] == {"judge": 4}
    m = st["metrics"]
    assert (m["judge_requests"], m["judge_requests_sent"], m["judge_unscored"]) == (6, 0, 0)  # the re-run: journaled
    assert len(server.judged) == len(NOTES) and m["tokens_in"] == 60  # the judge's tokens are not the teacher's


def test_an_uncalibrated_judge_filter_is_refused(tmp_path: Path) -> None:
    from sdk import grades as G

    server = Server()
    with OpenAIServer(server) as http:
        url = f"http://127.0.0.1:{http.port}/v1"
        path = write(tmp_path, http.port, JUDGED.replace("URL", url).replace("JUDGE_AGREEMENT", ""))
        with pytest.raises(SpecError) as e:  # no eval with human grading uses this judge
            load(path)
        assert re.search(r"r\.dsl:\d+:\d+: error: the judge judge drops rows, and a judge is trusted only as far as "
                         r"it agrees with the experts: no eval with human grading uses it", str(e.value)), str(e.value)
        calibrating = (f'\n  eval cal {{ data = "eval.jsonl"  systems = [endpoint {{ url = "{url}", model = "sys" }}]\n'
                       f'             metrics = [exact_match, judge]\n'
                       f'             judge = endpoint {{ url = "{url}", model = "judge" }}  human = {{ mode = pass_fail }}\n'
                       '             judge_agreement = { kappa = 0.6, min_items = 1 } }')
        path = write(tmp_path, http.port, JUDGED.replace("URL", url).replace("JUDGE_AGREEMENT", "") + calibrating)
        with pytest.raises(SpecError) as e:  # the calibrating eval has no grades yet
            load(path)
        assert "grades/t/cal.jsonl holds no grades yet" in str(e.value)
        G.append(G.grades_path(path, "t", "cal"), [{"item": "e1", "answer": G.answer_hash("INVITE"), "grader": "ana",
                                                    "verdict": "pass"}])
        result = sdk.apply(load(path), target=["synth.qa"])  # planned; refused when it runs: eval.cal never ran
    failed = next(o for o in result.outcomes if o.id == "synth.qa")
    assert failed.status == "failed" and "the judge filter is refused: eval.cal has not been applied" in failed.error
    assert server.teacher.prompts == [] and server.judged == []  # refused before any request
