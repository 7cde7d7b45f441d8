"""A model step as the synth step's teacher, and as a preference step's student (the rejected answer from the model
being tuned), on the tiny model of tests/_tiny.py: both opened through sdk.systems (the model kinds' opener, as
the eval and the playground open them), both journaled, so a re-run asks neither of them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sdk
from dsl.parser import load
from sdk.state import StateStore
from sdk.workspace import open_workspace
from tests._openai_server import OpenAIServer
from tests._tiny import tiny_model_dir
from tests.test_synth import Teacher, write

BODY = """  base_model tiny { path = "tiny-model" }
  synth t { corpus = corpus.notes  teacher = base_model.tiny  rows = 2  max_tokens = 6 }
  synth p { task = preference  corpus = corpus.notes  teacher = TEACHER  student = base_model.tiny  rows = 2
            max_tokens = 6  filters = { contamination = false, supported = false } }"""


def test_a_model_step_is_the_teacher_and_the_student(tmp_path: Path) -> None:
    tiny_model_dir(tmp_path)
    teacher = Teacher()
    with OpenAIServer(teacher) as http:
        path = write(tmp_path, http.port, BODY)
        assert sdk.apply(load(path)).ok
        first = StateStore(tmp_path / ".dsl" / "t").load().steps
        again = sdk.apply(load(path), replace=["synth.t", "synth.p"])
        assert again.ok and {"synth.t", "synth.p"} <= set(again.ran)
    steps = StateStore(tmp_path / ".dsl" / "t").load().steps
    m0, m1 = first["synth.t"]["metrics"], steps["synth.t"]["metrics"]
    assert (m0["requests"], m0["requests_sent"]) == (2, 2) and (m1["requests_sent"], m1["requests_journaled"]) == (0, 2)
    assert m0["tokens_in"] > 0 and m0["tokens_out"] <= 2 * 6  # counted by the model's own tokenizer
    assert m1["rows_in"] == m1["rows_out"] + sum(m1["by_reason"].values()) == 2
    assert len(teacher.prompts) == 2  # the endpoint teacher of synth.p, asked once: the re-run read the journal

    model = open_workspace(path).open("base_model.tiny").local  # the model as every system opener gives it
    art = tmp_path / ".dsl" / "t" / steps["synth.p"]["artifact"]
    cands = [json.loads(x) for x in (art / "candidates.jsonl").read_text().splitlines()]
    ledger: dict[str, Any] = json.loads((art / "ledger.json").read_text())
    for c in cands:  # the rejected answer is the student's greedy answer to the question, all its lines
        assert c["rejected"] == model.generate_many([model.generation_prompt(c["question"])], 6, 1, first_line=False)[0]
        assert c["chosen"] == c["answer"] != c["rejected"]
    assert len(cands) + sum(d["detail"] == "no rejected answer" for d in ledger["dropped"]) == 2
    long = model.generation_prompt("What does the SIP note say?")  # an eval scores the first line; a teacher keeps them all
    assert model.generate_many([long], 24, 1)[0] == model.generate_many([long], 24, 1, first_line=False)[0].split(
        "\n")[0].strip()
    journal = tmp_path / ".dsl" / "t" / "cache" / "synth" / "p" / "journal.jsonl"
    assert len(journal.read_text().splitlines()) == 4  # 2 teacher questions + 2 student answers, each once
