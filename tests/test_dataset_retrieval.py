"""Retrieval-augmented fine-tuning data: `dataset { retrieval = rag.X }` puts the chunks a rag system retrieves for
each row's question into the user turn, rendered with the rag's own prompt, and the fine-tuned model then serves
behind a rag system with that prompt. Plan-time errors: format text, and a rag whose generator trains on the very
dataset it augments (a cycle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdk.state import StateStore
from tests._eval import tiny_model
from tests.conftest import run_dsl

NOTES = {
    "sip": "An INVITE request starts a SIP call and a BYE request ends it.",
    "ims": "The HSS stores IMS subscriber profiles and the S-CSCF keeps session state.",
    "codec": "Opus is the WebRTC codec and AMR-WB is the VoLTE wideband codec.",
}
QA = [("Which SIP request starts a call?", "INVITE"), ("Where are IMS subscriber profiles stored?", "HSS"),
      ("Which codec does WebRTC use?", "Opus"), ("Which SIP request ends a call?", "BYE"),
      ("Which codec is wideband in VoLTE?", "AMR-WB"), ("What keeps IMS session state?", "S-CSCF")]
PROMPT = "{% for d in documents %}Note: {{ d.content }}\\n{% endfor %}Question: {{ question }}"


def _folder(tmp: Path, dataset_extra: str = "", extra: str = "", model: Path | None = None) -> Path:
    (tmp / "notes").mkdir(exist_ok=True)
    for name, text in NOTES.items():
        (tmp / "notes" / f"{name}.md").write_text(text + "\n")
    rows = [{"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in QA]
    (tmp / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = f'  base_model a {{ path = "{model}" }}\n' if model else ""
    (tmp / "r.dsl").write_text(f"""domain t {{
{base}  corpus notes {{ paths = ["notes/*.md"] }}
  rag ctx {{ corpus = corpus.notes  retriever = bm25  top_k = 1  prompt = "{PROMPT}" }}
  dataset qa {{ path = "qa.jsonl"  validation_split = 0.3  retrieval = rag.ctx {dataset_extra} }}
{extra}}}
""")
    return tmp / "r.dsl"


def _rows(art: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (art / name).read_text().splitlines()]


@pytest.mark.slow
def test_rows_get_the_chunks_the_rag_retrieves_then_train_and_serve_behind_it(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, 0)
    extra = f"""  finetune ft {{ from = base_model.a  data = dataset.qa  max_steps = 2  batch_size = 2  max_length = 96 }}
  rag tuned {{ corpus = corpus.notes  retriever = bm25  top_k = 1  prompt = "{PROMPT}"  generator = finetune.ft
              max_new_tokens = 4 }}
"""
    path = _folder(tmp_path, extra=extra, model=model)
    r = run_dsl("plan", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.index("rag.ctx") < r.stdout.index("dataset.qa")  # the dataset waits for the index

    r = run_dsl("apply", str(path), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    st = StateStore(tmp_path / ".dsl" / "t").load().steps
    art = tmp_path / ".dsl" / "t" / st["dataset.qa"]["artifact"]
    train, val = _rows(art, "train.jsonl"), _rows(art, "validation.jsonl")
    assert len(train) + len(val) == 2 * len(QA) and val  # every row as written and once with its chunk
    assert st["dataset.qa"]["metrics"]["with_retrieval"] == len(QA)
    for part in (train, val):  # a row and its copy stay on the same side of the split
        for bare, aug in zip(part[::2], part[1::2]):
            assert bare["_line"] == aug["_line"]
            question = bare["messages"][1]["content"]
            answer = bare["messages"][2]["content"]
            assert aug["messages"][0] == bare["messages"][0] and aug["messages"][2] == bare["messages"][2]
            note = next(t for t in NOTES.values() if answer in t)  # BM25 finds the note that holds the answer
            assert aug["messages"][1]["content"] == f"Note: {note}\nQuestion: {question}"
    assert "with chunks from rag.ctx" in st["dataset.qa"]["summary"]

    assert st["finetune.ft"]["status"] == "done" and st["rag.tuned"]["status"] == "done"
    r = run_dsl("ask", str(path), "Which SIP request starts a call?", "--system", "rag.tuned", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sources"][0]["source"].endswith("sip.md")

    # keep_bare = false keeps only the rows with chunks; only the dataset and what trains on it re-run
    path.write_text(path.read_text().replace("retrieval = rag.ctx", "retrieval = rag.ctx  keep_bare = false"))
    r = run_dsl("plan", str(path), "--json")
    changed = {s["id"] for s in json.loads(r.stdout)["steps"] if s["action"] != "noop"}
    assert changed == {"dataset.qa", "finetune.ft", "rag.tuned"}, changed
    r = run_dsl("apply", str(path), "--target", "dataset.qa", timeout=300)
    assert r.returncode == 0, r.stderr
    art = tmp_path / ".dsl" / "t" / StateStore(tmp_path / ".dsl" / "t").load().steps["dataset.qa"]["artifact"]
    rows = _rows(art, "train.jsonl") + _rows(art, "validation.jsonl")
    assert len(rows) == len(QA) and all(r["messages"][1]["content"].startswith("Note: ") for r in rows)


def test_retrieval_with_format_text_is_a_located_error(tmp_path: Path) -> None:
    path = _folder(tmp_path, dataset_extra="format = text")
    r = run_dsl("validate", str(path))
    assert r.returncode != 0
    assert "r.dsl:4:" in r.stderr and "retrieval applies to formats chat and instruction" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_rag_cannot_augment_the_data_its_own_generator_trains_on(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, 0)
    extra = "  finetune ft { from = base_model.a  data = dataset.qa }\n"
    path = _folder(tmp_path, extra=extra, model=model)
    path.write_text(path.read_text().replace("prompt = ", "generator = finetune.ft  prompt = "))
    r = run_dsl("plan", str(path))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "r.dsl:5:" in r.stderr  # located at the dataset's retrieval = rag.ctx (and at the other links)
    assert "cyclic reference: dataset.qa -> rag.ctx -> finetune.ft -> dataset.qa" in r.stderr
