"""The synth filters: every reason with its detail, the ledger's count, contamination listed by eval item (and its
recall on real TeleQnA, verbatim and paraphrased), duplicates that name the row they duplicate."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.synthfilter import contaminated, filter_rows, ledger, support
from tests._paraphrase import SYNONYMS, measure_contamination, paraphrase
from tests.conftest import ROOT

CHUNK = "The DRX cycle of site Bage lasts 512 ms. Its tracking area code is 4412 and it serves band n78."
LONG_ITEM = ("Which timer governs how long the user equipment keeps monitoring the downlink control channel after "
             "the last scheduled transmission on the serving cell")


def qa(rid: str, question: str, answer: str, chunk: str = CHUNK, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "task": "qa", "chunk_id": "c1", "source": "corpus/bage.md:1", "chunk": chunk,
            "question": question, "answer": answer, **extra}


EVAL = {"eval.ops": [("17", "How long is the DRX cycle of site Bage? 512 ms"), ("18", LONG_ITEM)],
        "eval.other": [("a", "Which band does site Kora serve? n41")]}


def test_each_reason_is_recorded_with_its_detail_and_the_ledger_adds_up() -> None:
    rows = [
        qa("keep", "What is the tracking area code of site Bage?", "4412"),
        qa("noq", "  ", "4412"),
        qa("long", "What band does site Bage serve?", "n78 " * 100),
        qa("judged", "Which band does site Bage serve?", "band n78", judge_score=0.2),
        qa("number", "What is the tracking area code of site Bage?", "4413"),
        qa("words", "Who built site Bage?", "Engineers from Tallinn in winter"),
        qa("verbatim", f"{LONG_ITEM}?", "the DRX inactivity timer", chunk="the DRX inactivity timer"),
        qa("reworded", "For site Bage, how long does the DRX cycle last?", "512 ms"),
        qa("dup", "What is the tracking area code of site Bage?", "4412!"),
        qa("near", "Which band does the site Bage serve for the operator in the northern region today?",
           "The site Bage serves band n78 for the operator in the northern region"),
        qa("near2", "Which band does the site Bage serve for the operator in the northern region today?",
           "The site Bage serves band n78 for the operator in the northern area"),
    ]
    options = {"max_chars": 300, "judge_min": 0.5}
    kept, dropped = filter_rows(rows, options=options, eval_items=EVAL)
    assert [r["id"] for r in kept] == ["keep", "near"]
    by_id = {d["id"]: d for d in dropped}
    assert by_id["noq"] == {"id": "noq", "reason": "empty", "detail": "no question"}
    assert by_id["long"] == {"id": "long", "reason": "too_long",
                             "detail": "the answer has 399 characters, over max_chars = 300"}
    assert by_id["judged"] == {"id": "judged", "reason": "judge", "detail": "judge score 0.2 under judge_min = 0.5"}
    assert by_id["number"]["detail"] == "the number(s) 4413 are not in the chunk"
    assert by_id["words"]["reason"] == "unsupported" and "missing: engineer, tallinn, winter" in by_id["words"]["detail"]
    assert by_id["verbatim"]["reason"] == "contamination" and by_id["verbatim"]["eval_item"] == "eval.ops:18"
    assert "shares 13-grams with eval item eval.ops:18" in by_id["verbatim"]["detail"]
    assert by_id["reworded"]["eval_item"] == "eval.ops:17" and "near-duplicate" in by_id["reworded"]["detail"]
    assert by_id["dup"] == {"id": "dup", "reason": "exact_duplicate", "detail": "same text as row keep (kept)",
                            "duplicate_of": "keep"}
    assert by_id["near2"]["reason"] == "near_duplicate" and by_id["near2"]["duplicate_of"] == "near"
    book = ledger(len(rows), kept, dropped)
    assert book["in"] == 11 and book["out"] == len(kept) and book["in"] == book["out"] + len(book["dropped"])
    assert book["by_reason"] == {"contamination": 2, "empty": 1, "exact_duplicate": 1, "judge": 1,
                                 "near_duplicate": 1, "too_long": 1, "unsupported": 2}
    with pytest.raises(ValueError, match="does not add up"):
        ledger(12, kept, dropped)


def test_switches_turn_filters_off_and_unknown_options_are_refused() -> None:
    rows = [qa("a", "How long is the DRX cycle of site Bage?", "512 ms"),
            qa("b", "How long is the DRX cycle of site Bage?", "512 ms"),
            qa("c", "Who built site Bage?", "Engineers from Tallinn")]
    kept, dropped = filter_rows(rows, options={"dedupe": "none", "contamination": False, "supported": False},
                                eval_items=EVAL)
    assert len(kept) == 3 and dropped == []
    kept, dropped = filter_rows(rows, options={"dedupe": False, "contamination_threshold": 1.1}, eval_items=EVAL)
    assert [d["reason"] for d in dropped] == ["unsupported"]  # near overlap off; no 13-gram in so short a text
    assert filter_rows([qa("x", "Q about Bage?", "512")], options={}, eval_items={})[1] == []  # no eval sets
    assert filter_rows([qa("x", "Q about Bage?", "512")], options={"min_chars": 4}, eval_items={})[1] == [
        {"id": "x", "reason": "empty", "detail": "the answer has 3 characters, under min_chars = 4"}]
    with pytest.raises(ValueError, match="unknown filter option.*near_treshold"):
        filter_rows(rows, options={"near_treshold": 0.9}, eval_items={})
    with pytest.raises(ValueError, match="dedupe = 'fuzzy'"):
        filter_rows(rows, options={"dedupe": "fuzzy"}, eval_items={})
    with pytest.raises(ValueError, match="needs an embed callable"):
        filter_rows(rows, options={"dedupe": "embedding"}, eval_items={})


def _hashed_bag(texts: list[str]) -> list[list[float]]:
    """A real, if crude, embedding: a 64-dim hashed bag of words (order-free)."""
    out = []
    for text in texts:
        vec = [0.0] * 64
        for word in text.lower().split():
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        out.append(vec)
    return out


def test_embedding_dedupe_keeps_the_first_and_names_it() -> None:
    rows = [{"id": "p1", "prompt": "Explain the DRX cycle of site Bage", "chosen": "It lasts 512 ms", "rejected": "x"},
            {"id": "p2", "prompt": "the DRX cycle of site Bage explain", "chosen": "512 ms it lasts", "rejected": "y"},
            {"id": "p3", "prompt": "Which band serves Kora", "chosen": "n41 serves Kora", "rejected": "z"}]
    kept, dropped = filter_rows(rows, options={"dedupe": "embedding", "near_threshold": 0.99}, eval_items={},
                                embed=_hashed_bag)
    assert [r["id"] for r in kept] == ["p1", "p3"]
    assert dropped[0]["duplicate_of"] == "p1" and dropped[0]["detail"].startswith("cosine 1.00 with row p1")
    assert filter_rows(rows, options={"dedupe": "near"}, eval_items={})[1] == []  # shingles see the new order


def test_support_reads_content_words_and_numbers() -> None:
    assert support("It lasts 512 ms.", CHUNK) == (1.0, [])
    raft = ("Document [3] says ##begin_quote## The DRX cycle of site Bage lasts 512 ms. ##end_quote## [3] Therefore "
            "it lasts 512 ms.\n<ANSWER>: 512 ms")
    assert support(raft, CHUNK) == (1.0, [])
    share, missing = support("The cycle lasts 640 ms on Tuesdays", CHUNK)
    assert missing == ["640", "tuesday"] and share == pytest.approx(3 / 5)
    row = qa("r", "What is the DRX cycle?", "640 ms", chunk="")  # no chunk: nothing to check against
    assert filter_rows([row], options={}, eval_items={})[1] == []


def test_contaminated_lists_rows_by_eval_item_with_a_score() -> None:
    rows = [qa("v", f"{LONG_ITEM}?", "the DRX inactivity timer"),
            qa("p", paraphrase("How long is the DRX cycle of site Bage?"), "512 ms"),
            qa("u", "Which band does site Bage serve?", "n78"), {"question": "Which band does site Kora serve?",
                                                                   "answer": "n41"}]
    hits = contaminated(rows, EVAL)
    assert set(hits) == {"v", "p", "#3"}
    assert hits["v"][:2] == ("eval.ops", "18") and hits["v"][2] > 0.5
    assert hits["p"][:2] == ("eval.ops", "17") and 0.6 <= hits["p"][2] <= 1.0
    assert hits["#3"] == ("eval.other", "a", 1.0)
    assert contaminated(rows, EVAL, threshold=1.5) == {"v": hits["v"]}  # n-grams only
    assert contaminated([], EVAL) == {} and contaminated(rows, {}) == {}


_WORDS = st.sampled_from(["site", "Bage", "Kora", "band", "n78", "512", "ms", "DRX", "cycle", "lasts", "serves", "the", "of"])
_TEXT = st.lists(_WORDS, min_size=0, max_size=14).map(" ".join)
_ROW = st.fixed_dictionaries({"question": _TEXT, "answer": _TEXT, "chunk": _TEXT},
                             optional={"judge_score": st.floats(0, 1)})


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(_ROW, max_size=25), dedupe=st.sampled_from(["none", "exact", "near"]),
       max_chars=st.integers(0, 120))
def test_rows_in_equal_rows_kept_plus_rows_dropped(rows: list[dict[str, Any]], dedupe: str, max_chars: int) -> None:
    rows = [{"id": f"r{i}", **r} for i, r in enumerate(rows)]
    kept, dropped = filter_rows(rows, options={"dedupe": dedupe, "max_chars": max_chars, "judge_min": 0.5},
                                eval_items={"eval.e": [("1", "How long does the DRX cycle of site Bage last")]})
    assert len(rows) == len(kept) + len(dropped)
    assert sorted([r["id"] for r in kept] + [d["id"] for d in dropped]) == sorted(r["id"] for r in rows)
    assert all(d["reason"] and d["detail"] for d in dropped)
    assert sum(ledger(len(rows), kept, dropped)["by_reason"].values()) == len(dropped)


def test_paraphrase_moves_words_and_swaps_synonyms_deterministically() -> None:
    text = "What is the purpose of the Nmfaf service operation?"
    out = paraphrase(text)
    assert out == paraphrase(text) == "the Nmfaf service operation: what is the aim of?"
    assert SYNONYMS["purpose"] == "aim"


def test_importing_the_filters_imports_no_heavy_library() -> None:
    code = "import sys, sdk.synthfilter; print(sorted({'datasketch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_contamination_recall_on_real_teleqna(shared_data: Path) -> None:
    """400 TeleQnA items planted verbatim and paraphrased among 2,000 others (the full-size run is
    tests/benchmarks/bench_synth.py's)."""
    got = measure_contamination(shared_data, n_eval=400, n_unrelated=2000)
    assert got["verbatim"] == 1.0
    assert got["paraphrased"] >= 0.9, got
    assert got["false_positive"] < 0.02, got
    assert got["new_answer"] >= 0.8, got  # question reworded, a longer answer of its own
    assert got["changed_words"] > 0.1, got  # the paraphrases really reword
