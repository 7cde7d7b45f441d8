"""Fine-tuned model, RAG and fine-tuned + RAG systems in one eval: citations and retrieval metrics against
`sources`, classification with the retrieved context, contamination against SFT data and rag corpora, the loss
curves of earlier steps in the report, and fail_on_contamination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdk.state import StateStore
from tests._eval import tiny_model
from tests.conftest import run_dsl

pytestmark = pytest.mark.slow

DOCS = {
    "sip": "The Session Initiation Protocol sets up calls. An INVITE request starts a call and a BYE request ends it.",
    "ims": "The IP Multimedia Subsystem keeps session state in the S-CSCF and stores subscriber profiles in the HSS.",
    "codec": "AMR-WB is the wideband codec of VoLTE, while Opus is the codec of WebRTC and adapts its bit rate.",
}
LEAKED = "Which request starts a call in the Session Initiation Protocol used by phones?"
EVAL = [
    {"id": "e1", "question": LEAKED, "answer": "INVITE", "sources": ["sip"]},
    {"id": "e2", "question": "Where does IMS store subscriber profiles?", "answer": "HSS", "sources": ["docs/ims.md"]},
    {"id": "e3", "question": "Which codec does WebRTC use?", "answer": "Opus", "sources": ["codec"]},
]
CLS = [
    {"id": "c1", "question": "Does a BYE request end a SIP call?", "label": "yes", "sources": ["sip"]},
    {"id": "c2", "question": "Is Opus the codec of VoLTE?", "label": "no", "sources": ["codec"]},
    {"id": "c3", "question": "Does the HSS store subscriber profiles?", "label": "yes", "sources": ["ims"]},
    {"id": "c4", "question": "Does the S-CSCF store the codec?", "label": "no", "sources": ["ims"]},
]


def jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_finetune_rag_side_by_side_with_citations_and_contamination(tmp_path: Path) -> None:
    model = tiny_model(tmp_path, 0)
    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / f"{name}.md").write_text(f"# {name}\n\n{text}\n")
    jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": LEAKED}, {"role": "assistant", "content": "INVITE"}]},
                                   {"messages": [{"role": "user", "content": "What ends a call?"}, {"role": "assistant", "content": "BYE"}]}])
    jsonl(tmp_path / "eval.jsonl", EVAL)
    jsonl(tmp_path / "cls.jsonl", CLS)
    (tmp_path / "r.dsl").write_text(f"""domain t {{
  base_model a {{ path = "{model}" }}
  corpus notes {{ paths = ["docs/*.md"] }}
  dataset qa {{ path = "sft.jsonl" }}
  finetune ft {{
    from = base_model.a
    data = dataset.qa
    max_steps = 2
    logging_steps = 1
    batch_size = 2
    max_length = 64
  }}
  rag docs {{
    corpus = corpus.notes
    retriever = bm25
    top_k = 2
    generator = base_model.a
    max_new_tokens = 6
  }}
  rag tuned {{
    corpus = corpus.notes
    retriever = bm25
    top_k = 2
    generator = finetune.ft
    max_new_tokens = 6
  }}
  eval expert {{
    data = "eval.jsonl"
    metrics = [exact_match, f1, citation_precision, citation_recall, recall_at_k, mrr, perplexity]
    systems = [finetune.ft, rag.docs, rag.tuned]
    ngram = 8
    max_new_tokens = 6
    bootstrap = 200
  }}
  eval cls {{
    data = "cls.jsonl"
    metrics = [accuracy, macro_f1, recall_at_k]
    systems = [base_model.a, rag.docs]
    bootstrap = 200
  }}
  eval strict {{
    data = "eval.jsonl"
    metrics = [exact_match]
    systems = [finetune.ft]
    ngram = 8
    fail_on_contamination = true
    max_new_tokens = 4
    bootstrap = 200
  }}
}}
""")
    r = run_dsl("apply", str(tmp_path / "r.dsl"), timeout=600)
    steps = StateStore(tmp_path / ".dsl" / "t").load().steps
    assert steps["eval.expert"]["status"] == "done", r.stderr
    assert steps["eval.cls"]["status"] == "done", r.stderr

    m = steps["eval.expert"]["metrics"]
    assert set(m["finetune.ft"]) == {"exact_match", "f1", "perplexity"}  # no retrieval: citation metrics do not apply
    # answer perplexity: each system scores the reference after its own prompt (rag: with the retrieved chunks)
    for sid in ("finetune.ft", "rag.docs", "rag.tuned"):
        assert m[sid]["perplexity"]["n"] == len(EVAL) and 1.0 < m[sid]["perplexity"]["value"]
    assert set(m["comparisons"]["rag.tuned"]) >= {"f1", "perplexity"}
    assert m["rag.tuned"]["perplexity"]["value"] != pytest.approx(m["finetune.ft"]["perplexity"]["value"])  # same model
    assert m["comparisons"]["rag.tuned"]["perplexity"]["difference"] == pytest.approx(
        m["rag.tuned"]["perplexity"]["value"] - m["finetune.ft"]["perplexity"]["value"])
    for sid in ("rag.docs", "rag.tuned"):
        # BM25 over three distinct notes finds each question's note; sources match by file stem or path
        assert m[sid]["recall_at_k"]["value"] == 1.0
        assert m[sid]["mrr"]["value"] == 1.0
        assert 0.0 <= m[sid]["citation_precision"]["value"] <= 1.0
        assert m[sid]["citation_recall"]["value"] == 1.0  # without [n] markers, the returned sources are the citations
    assert set(m["comparisons"]) == {"rag.docs", "rag.tuned"}
    assert m["contaminated_items"] == 1

    art = tmp_path / ".dsl" / "t" / steps["eval.expert"]["artifact"]
    summary = json.loads((art / "summary.json").read_text())
    assert list(summary["contamination"]["items"]) == ["e1"] and summary["contamination"]["items"]["e1"] > 0.5
    assert summary["contamination"]["steps"] == ["corpus.notes", "dataset.qa"]
    preds = [json.loads(x) for x in (art / "predictions.jsonl").read_text().splitlines()]
    assert {p["contamination"] > 0 for p in preds if p["id"] == "e1"} == {True}
    assert all(p["sources"] for p in preds if p["system"].startswith("rag."))
    # the fine-tuning loss curve of the earlier step is charted in the report
    assert (art / "loss_curves.png").is_file() and "Training loss of earlier steps" in (art / "report.md").read_text()

    c = steps["eval.cls"]["metrics"]
    assert c["task"] == "classification"
    assert c["rag.docs"]["recall_at_k"]["value"] == 1.0
    cls_preds = [json.loads(x) for x in (tmp_path / ".dsl" / "t" / steps["eval.cls"]["artifact"] / "predictions.jsonl").read_text().splitlines()]
    assert {p["prediction"] for p in cls_preds} <= {"yes", "no"}  # labels scored by log-likelihood
    assert 0.0 <= c["rag.docs"]["macro_f1"]["ci_low"] <= c["rag.docs"]["macro_f1"]["value"] <= c["rag.docs"]["macro_f1"]["ci_high"]

    assert steps["eval.strict"]["status"] == "gate_failed"
    assert r.returncode != 0
    assert ("1 eval items overlap the training data (1 of 3 share 8-grams with dataset.qa) and "
            "fail_on_contamination is set (items: e1)") in r.stderr
