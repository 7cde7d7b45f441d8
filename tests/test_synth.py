"""The synth step against a real scripted OpenAI-compatible server: qa rows with their chunk ids, raft rows whose
distractors are the rag system's own retrieval, preference pairs, eval candidates, the ledger, tokens and cost,
the token budget, 429 retried, a kill -9 mid-run resumed without asking the teacher again, a finetune on a synth
dataset, and the plan errors (eval candidates never train, raft without rag)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import JSONResponse

import sdk
from dsl.parser import load
from sdk.state import StateStore
from tests._openai_server import OpenAIServer, chat_completion
from tests.conftest import ROOT, run_dsl

NOTES = {
    "sip": "An INVITE request starts a SIP call and a BYE request ends it.",
    "ims": "The HSS stores IMS subscriber profiles and the S-CSCF keeps session state.",
    "codec": "Opus is the WebRTC codec and AMR-WB is the VoLTE wideband codec.",
    "ran": "The gNB is the 5G radio base station and the eNB is the LTE one.",
    "core": "The AMF handles 5G registration and the SMF manages PDU sessions.",
    "volte": "VoLTE carries voice over the LTE packet core through IMS.",
}
EVAL = {"id": "e1", "question": "Which SIP request starts a call?", "answer": "INVITE"}


class Teacher:
    """Scripted: a question about a passage is its text made a question; a raft answer quotes and cites it.
    Every request is 10 prompt + 5 completion tokens. ``fail`` maps a passage word to how many 429s it gets first."""

    def __init__(self, delay: float = 0.0, fail: dict[str, int] | None = None) -> None:
        self.prompts: list[str] = []
        self.refused: list[str] = []
        self.delay, self.fail = delay, dict(fail or {})
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any], request: Any) -> Any:
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.prompts.append(prompt)
            for word, left in self.fail.items():
                if left and word in prompt:
                    self.fail[word] = left - 1
                    self.refused.append(prompt)
                    return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if self.delay:
            time.sleep(self.delay)
        if "##begin_quote##" in prompt:
            cite = re.search(r"Document \[(\d+)\]", prompt).group(1)
            chunk = prompt.split("):\n", 1)[1].split("\n\nQuestion:")[0].strip()
            text = f"The document says ##begin_quote##{chunk}##end_quote## [{cite}].\n<ANSWER>: {chunk.split()[1]}"
        else:
            chunk = prompt.split("):\n", 1)[1].split("\n\nReply with")[0].strip()
            text = json.dumps({"question": f"What is true of {chunk.rstrip('.')}?", "answer": chunk})
        reply = chat_completion(text, model=body["model"])
        reply["usage"] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        return reply


def write(folder: Path, port: int, body: str) -> Path:
    (folder / "notes").mkdir(parents=True, exist_ok=True)
    for name, text in NOTES.items():
        (folder / "notes" / f"{name}.md").write_text(text + "\n")
    (folder / "eval.jsonl").write_text(json.dumps(EVAL) + "\n")
    teacher = f'endpoint {{ url = "http://127.0.0.1:{port}/v1", model = "teach" }}'
    (folder / "r.dsl").write_text(f"""domain t {{
  corpus notes {{ paths = ["notes/*.md"] }}
  rag ctx {{ corpus = corpus.notes  retriever = bm25  top_k = 2 }}
{body.replace("TEACHER", teacher)}
}}
""")
    return folder / "r.dsl"


MAIN = """  synth qa { corpus = corpus.notes  teacher = TEACHER  concurrency = 4  price = { input = 1.0, output = 2.0 } }
  synth rf { task = raft  corpus = corpus.notes  teacher = TEACHER  rag = rag.ctx  distractors = 2
             no_golden_share = 0.34  filters = { contamination = false } }
  synth pref { task = preference  corpus = corpus.notes  teacher = TEACHER  rows = 3
               filters = { contamination = false } }
  synth ev { task = eval  corpus = corpus.notes  teacher = TEACHER  rows = 2  filters = { contamination = false } }
  base_model b { path = "model"  backend = "test" }
  finetune ft { from = base_model.b  data = synth.qa  backend = "test" }
  align al { from = finetune.ft  pairs = synth.pref  backend = "test" }
  eval expert { data = "eval.jsonl"  systems = [finetune.ft]  metrics = [exact_match]  backend = "test" }"""


def rows(art: Path, name: str = "rows.jsonl") -> list[dict[str, Any]]:
    return [json.loads(x) for x in (art / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("synth")
    (folder / "model").mkdir()
    teacher = Teacher(fail={"Opus": 2})
    with OpenAIServer(teacher) as server:
        path = write(folder, server.port, MAIN)
        result = sdk.apply(load(path))
        assert result.ok, result
        first = len(teacher.prompts)
        again = sdk.apply(load(path), replace=["synth.qa", "synth.rf"])
        assert again.ok
    state = StateStore(folder / ".dsl" / "t").load().steps
    arts = {sid: folder / ".dsl" / "t" / e["artifact"] for sid, e in state.items() if e.get("artifact")}
    return {"folder": folder, "state": state, "arts": arts, "teacher": teacher, "first": first, "path": path}


def test_qa_rows_keep_their_chunk_ids_tokens_and_cost(applied: Any) -> None:
    st, art = applied["state"]["synth.qa"], applied["arts"]["synth.qa"]
    cands = rows(art, "candidates.jsonl")
    assert len(cands) == len(NOTES) - 1 and all(re.fullmatch(r"[0-9a-f]{16}", c["id"]) for c in cands)
    assert NOTES["sip"] not in {c["chunk"] for c in cands}  # its question is the eval item's: contamination
    for c in cands:
        name = c["chunk_id"].split("/")[-1].split(".")[0]
        assert c["chunk"] == NOTES[name] and c["answer"] == NOTES[name] and c["source"].startswith("notes/")
    final = {r["id"]: r for r in rows(art)}
    assert set(final) == {c["id"] for c in cands}
    c = cands[0]
    assert final[c["id"]]["messages"] == [{"role": "user", "content": c["question"]},
                                          {"role": "assistant", "content": c["answer"]}]
    m = st["metrics"]
    assert (m["requests"], m["tokens_in"], m["tokens_out"]) == (6, 60, 30)
    assert m["cost"] == pytest.approx((60 * 1.0 + 30 * 2.0) / 1e6)
    ledger = json.loads((art / "ledger.json").read_text())
    assert ledger["in"] == ledger["out"] + len(ledger["dropped"]) == 6
    assert [(d["reason"], d["eval_item"]) for d in ledger["dropped"]] == [("contamination", "eval.expert:e1")]
    assert ledger["by_reason"] == {"contamination": 1} == st["metrics"]["by_reason"]
    assert "6 rows in, 5 out (dropped: 1 contamination)" in st["summary"]


def test_429_is_retried_with_backoff(applied: Any) -> None:
    refused = applied["teacher"].refused
    assert len(refused) == 2 and refused[0] == refused[1]  # two 429s for one request, then its answer:
    assert applied["teacher"].prompts.count(refused[0]) >= 3
    assert {c["chunk"] for c in rows(applied["arts"]["synth.rf"], "candidates.jsonl")} == set(NOTES.values())


def test_raft_distractors_come_from_the_rag_retrieval(applied: Any) -> None:
    from sdk.workspace import open_workspace

    cands = rows(applied["arts"]["synth.rf"], "candidates.jsonl")
    final = {r["id"]: r for r in rows(applied["arts"]["synth.rf"])}
    rag = open_workspace(applied["path"]).rag("ctx", with_generator=False)
    assert len(cands) == 6 and sum(not c["golden"] for c in cands) == 2  # round(0.34 * 6)
    for c in cands:
        found = [d["id"] for d in rag.retrieve(c["question"], top_k=3) if d["id"] != c["chunk_id"]][:2]
        assert c["distractors"] == found and c["chunk_id"] not in found
        ids = [d["id"] for d in c["documents"]]
        assert sorted(ids) == sorted(found + ([c["chunk_id"]] if c["golden"] else []))
        user, answer = (m["content"] for m in final[c["id"]]["messages"])
        assert user == rag.render_prompt(c["question"], c["documents"])
        assert "##begin_quote##" + c["chunk"] + "##end_quote##" in answer
        cite = re.findall(r"\[(\d+)\]", answer)
        assert cite == ([str(ids.index(c["chunk_id"]) + 1)] if c["golden"] else [])


def test_preference_and_eval_candidates(applied: Any) -> None:
    pairs = rows(applied["arts"]["synth.pref"])
    assert len(pairs) == 3 and all(p["chosen"] != p["rejected"] and p["prompt"].startswith("What") for p in pairs)
    items = rows(applied["arts"]["synth.ev"])
    assert len(items) == 2 and all(i["question"] and i["answer"] and i["sources"][0].startswith("notes/")
                                   for i in items)
    manifest = json.loads((applied["arts"]["synth.ev"] / "manifest.json").read_text())
    assert manifest["outputs"]["task"] == "eval" and "train" not in manifest["outputs"]  # nothing trains on it


def test_rerun_asks_the_teacher_nothing_and_finetune_reads_the_rows(applied: Any) -> None:
    assert len(applied["teacher"].prompts) == applied["first"]  # replaced steps re-ran from the journal
    m = applied["state"]["synth.rf"]["metrics"]
    assert m["requests_sent"] == 0 and m["requests_journaled"] == 12
    ft = json.loads((applied["arts"]["finetune.ft"] / "out.json").read_text())
    assert "synth.qa" in ft["inputs"]
    assert "synth.pref" in json.loads((applied["arts"]["align.al"] / "out.json").read_text())["inputs"]


def test_budget_stops_cleanly(tmp_path: Path) -> None:
    teacher = Teacher()
    with OpenAIServer(teacher) as server:
        body = "  synth qa { corpus = corpus.notes  teacher = TEACHER  concurrency = 1  budget_tokens = 30 }"
        path = write(tmp_path, server.port, body)
        logs: list[str] = []
        assert sdk.apply(load(path), log=logs.append).ok
    st = StateStore(tmp_path / ".dsl" / "t").load().steps["synth.qa"]
    assert len(teacher.prompts) == 2 and st["metrics"]["budget_stopped"] is True
    assert st["metrics"]["rows_out"] == 2 and "stopped at the token budget" in st["summary"]
    assert any("stopped at the token budget (30 of 30 tokens used)" in line for line in logs)


def test_kill_9_then_resume_repeats_no_request(tmp_path: Path) -> None:
    teacher = Teacher(delay=0.2)
    with OpenAIServer(teacher) as server:
        path = write(tmp_path, server.port, "  synth qa { corpus = corpus.notes  teacher = TEACHER  concurrency = 1 }")
        journal = tmp_path / ".dsl" / "t" / "cache" / "synth" / "qa" / "journal.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "apply", str(path)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = len(journal.read_text().splitlines())
        asked = list(teacher.prompts)
        assert 2 <= done < len(NOTES)
        assert sdk.apply(load(path)).ok  # the killed run's lock is stale: taken over
    again = teacher.prompts[len(asked):]
    journaled = {json.loads(x)["key"] for x in journal.read_text().splitlines()}
    assert len(journaled) == len(NOTES)
    assert not set(again) & set(asked[:done])  # nothing journaled before the kill was asked again
    assert len(again) <= len(NOTES) - done + 1  # at most the request in flight at the kill is asked twice
    assert StateStore(tmp_path / ".dsl" / "t").load().steps["synth.qa"]["metrics"]["rows_out"] == len(NOTES)


def test_plan_errors_are_located(tmp_path: Path) -> None:
    body = """  synth ev { task = eval  corpus = corpus.notes  teacher = TEACHER }
  base_model b { path = "model" }
  finetune ft { from = base_model.b  data = synth.ev }"""
    (tmp_path / "model").mkdir()
    path = write(tmp_path, 9, body)
    r = run_dsl("plan", str(path))
    assert r.returncode != 0
    assert re.search(r"r\.dsl:\d+:\d+: error: synth\.ev makes candidate eval items \(task = eval\): eval "
                     r"candidates are never used for training", r.stdout + r.stderr), r.stdout + r.stderr
    path = write(tmp_path, 9, body.replace("finetune ft { from = base_model.b  data = synth.ev }",
                                           "align al { from = base_model.b  pairs = synth.ev }"))
    r = run_dsl("plan", str(path))
    assert r.returncode != 0 and "eval candidates are never used for training" in r.stdout + r.stderr
    path = write(tmp_path, 9, "  synth rf { task = raft  corpus = corpus.notes  teacher = TEACHER }")
    r = run_dsl("validate", str(path))
    assert r.returncode != 0 and "r.dsl:4:" in r.stdout + r.stderr and "set rag = rag.X" in r.stdout + r.stderr
