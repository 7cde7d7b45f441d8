"""Retrieval adapted to the domain (issue 27): the pairs and their split by source document, the decision that keeps
a part only where it wins, and a real rag step that tunes the embedder with sentence-transformers' trainer, keeps
it (or not) and answers with it; the trained cross-encoder reranker path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load, loads
from sdk.backends.rag.adapt import decide, per_query
from sdk.backends.rag.adapt_pairs import Pair, split_by_document
from sdk.errors import DslError

SITES = ["Bage", "Corvo", "Dunmore", "Elvas", "Faro", "Galway", "Hove", "Jena"]
PARAMS = [("DRX cycle", "lasts", "ms", 128), ("uplink power limit", "is", "dBm", 7), ("handover margin", "is", "dB", 3)]


def write_domain(folder: Path, adapt: str, retriever: str = "dense", backend: str = "torch") -> Path:
    """One document per site (one line per parameter, one chunk per line) and a question per line, each row naming
    its source document (the gold chunk is the line holding the answer)."""
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, site in enumerate(SITES):
        lines = []
        for name, verb, unit, base in PARAMS:
            value = f"{base + 7 * i} {unit}"
            lines.append(f"The {name} of site {site} {verb} {value}.")
            rows.append({"messages": [{"role": "user", "content": f"What is the {name} of site {site}?"},
                                      {"role": "assistant", "content": value}], "sources": [f"{site.lower()}.txt"]})
        (folder / "docs" / f"{site.lower()}.txt").write_text("\n".join(lines) + "\n")
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    embedding = "" if retriever == "bm25" else f"  embedding_backend = {backend}"  # bm25 embeds nothing
    (folder / "r.dsl").write_text(f"""domain adapt {{
  corpus sites {{ paths = ["docs/*.txt"]  split = {{ by = line, length = 1, overlap = 0 }} }}
  dataset qa {{ path = "qa.jsonl"  format = chat }}
  rag docs {{ corpus = corpus.sites  retriever = {retriever}  top_k = 3{embedding}
             adapt = {{ pairs = dataset.qa  {adapt} }} }}
}}
""")
    return folder / "r.dsl"


def test_the_split_is_by_source_document_and_drops_test_documents() -> None:
    pairs = [Pair(f"q{d}-{i}", (f"c{d}-{i}",), f"doc{d}") for d in range(20) for i in range(3)]
    split = split_by_document(pairs, 0.25, seed=0, test_docs={"doc0"})
    train_docs, dev_docs = {p.source for p in split.train}, {p.source for p in split.dev}
    assert train_docs and dev_docs and not train_docs & dev_docs  # no document on both sides
    assert "doc0" not in train_docs | dev_docs and split.dropped == 3  # a test document is never trained on
    assert split.held_out >= dev_docs | {"doc0"}
    assert len(split.train) + len(split.dev) == 57
    again = split_by_document(pairs, 0.25, seed=0, test_docs={"doc0"})
    assert [p.question for p in again.dev] == [p.question for p in split.dev]  # a fixed rule
    with pytest.raises(DslError, match="at least 2 source documents"):
        split_by_document(pairs[:3], 0.5, seed=0)


def test_decide_keeps_a_part_only_when_the_lower_bound_of_its_gain_clears_min_gain() -> None:
    base = [0.0] * 30 + [1.0] * 30
    better = [1.0] * 55 + [0.0] * 5
    won = decide(base, better, 0.0)
    assert won["kept"] and won["ci_low"] > 0 and "kept" in won["reason"]
    assert not decide(base, better, 0.9)["kept"]  # the same gain, a bar it cannot clear
    same = decide(base, list(base), 0.0)
    assert not same["kept"] and same["gain"] == 0 and "base is kept" in same["reason"]
    worse = decide(better, base, 0.0)
    assert not worse["kept"] and worse["ci_high"] < 0


def test_per_query_figures_rank_the_first_gold_chunk() -> None:
    dev = [Pair("a", ("x",), "d"), Pair("b", ("y", "z"), "d"), Pair("c", ("w",), "d")]
    got = per_query([["x", "q"], ["q", "r", "z"], ["q"]], dev)
    assert got == {"recall_at_1": [1.0, 0.0, 0.0], "recall_at_5": [1.0, 1.0, 0.0], "mrr": [1.0, 1 / 3, 0.0]}


def test_adapt_is_checked_strictly(tmp_path: Path) -> None:
    base = """domain d {{ corpus c {{ paths = ["x/*.txt"] }}  dataset qa {{ path = "qa.jsonl" }}
      rag r {{ corpus = corpus.c  retriever = {r}  adapt = {{ pairs = {p} {more} }} }} }}"""
    ok = loads(base.format(r="hybrid", p="dataset.qa", more="matryoshka = [384, 128]"))
    assert ok.rag["r"].adapt.matryoshka == [384, 128] and ok.rag["r"].adapt.min_gain == 0.0
    for r, p, more, message in [
        ("dense", "corpus.c", "", "only dataset or eval or synth fits"),
        ("bm25", "dataset.qa", "", "only a reranker can be adapted"),
        ("dense", "dataset.qa", "embedder = false", "nothing to adapt"),
        ("dense", "dataset.qa", "fusion = true", "needs retriever = hybrid"),
        ("dense", "dataset.qa", "matryoshka = [128, 384]", "largest first"),
        ("dense", "dataset.qa", "epochs = \"2\"", "integer"),
        ("dense", "dataset.qa", "lr = 1", "lr"),
    ]:
        with pytest.raises(DslError, match=message):
            loads(base.format(r=r, p=p, more=more))


@pytest.mark.slow
def test_rag_step_tunes_keeps_and_answers_with_the_tuned_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_domain(tmp_path, "fusion = true  epochs = 1  batch_size = 8  min_gain = -1.0  matryoshka = [384, 64]",
                          retriever="hybrid", backend="onnx")
    result = sdk.apply(load(recipe))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(recipe)
    art = ws.artifact("rag.docs")
    record = art.outputs["adapt"]
    part = record["parts"]["embedder"]
    assert part["kept"] and part["training"]["steps"] >= 1 and part["training"]["with_negatives"]
    assert record["split"]["train"] + record["split"]["dev"] == 24 and record["split"]["dev_documents"] >= 1
    tuned = art.path / "adapted" / "embedder"
    assert (tuned / "modules.json").is_file() and (art.path / "adapted" / "adapt.json").is_file()
    assert json.loads((art.path / "adapted" / "adapt.json").read_text())["parts"]["embedder"]["kept"]
    rag = ws.rag("docs", with_generator=False)
    assert rag.block.embedder == str(tuned)  # the query side embeds with the tuned model too
    fusion = record["parts"]["fusion"]
    assert fusion["kept"] and rag.fusion == fusion["params"] and "weights" in fusion["params"]  # learned on dev
    top = rag.retrieve("What is the handover margin of site Jena?", top_k=3)
    assert any("Jena" in d["content"] for d in top)
    assert art.outputs["embedding_backend"] == "onnx"  # the index was embedded by the tuned model through ONNX
    assert "adapted: embedder kept (mrr gain" in ws.state.steps["rag.docs"]["summary"]  # what dsl status shows
    dims = part["matryoshka_dev"]  # dev figures of the tuned embedder at each Matryoshka dimension, reported only
    assert list(dims) == ["384", "64"] and all(0.0 <= f["recall_at_5"] <= 1.0 for f in dims.values())
    assert dims["384"]["recall_at_5"] >= 0.5  # the full dimension finds most gold lines of this tiny domain
    assert f"matryoshka recall@5 384: {dims['384']['recall_at_5']:.3f}, 64: " in ws.state.steps["rag.docs"]["summary"]
    # the exported pipeline.yaml is self-contained: the tuned embedder named relative to the artifact, the learned
    # fusion in it; loaded back by Haystack itself from the artifact folder, it retrieves what the rag system does
    from haystack import Pipeline

    from sdk.backends.rag.retrievers import last_component, run_inputs

    text = (art.path / "pipeline.yaml").read_text()
    assert "adapted/embedder" in text and str(art.path) not in text and str(tmp_path) not in text
    q = "What is the handover margin of site Jena?"
    monkeypatch.chdir(art.path)
    pipe = Pipeline.loads(text, allowed_modules=["sdk.backends.rag.index_store", "sdk.backends.rag.fusion_joiner"])
    if (art.path / "store.json").is_file():  # the in-memory store of the YAML is empty: filled from store.json
        from haystack.document_stores.in_memory import InMemoryDocumentStore
        from haystack.document_stores.types import DuplicatePolicy

        chunks = InMemoryDocumentStore.load_from_disk("store.json").filter_documents()
        pipe.get_component("bm25").document_store.write_documents(chunks, policy=DuplicatePolicy.OVERWRITE)
    last = last_component(rag.block)
    out = pipe.run({**run_inputs(rag.block, q, 3, rag.fusion), "prompt_builder": {"question": q}},
                   include_outputs_from={last})
    exported = [d.id for d in out[last]["documents"]][:3]
    assert exported == [d["id"] for d in rag.retrieve(q, top_k=3)]


@pytest.mark.slow
def test_a_part_that_cannot_win_is_rejected_and_the_reranker_path_runs(tmp_path: Path) -> None:
    recipe = write_domain(tmp_path, "embedder = false  reranker = true  epochs = 1  batch_size = 8  min_gain = 0.99",
                          retriever="bm25")
    result = sdk.apply(load(recipe))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(recipe)
    art = ws.artifact("rag.docs")
    part = art.outputs["adapt"]["parts"]["reranker"]
    assert not part["kept"] and "base is kept" in part["reason"] and part["training"]["steps"] >= 1
    assert not (art.path / "adapted" / "reranker").exists()  # the rejected weights are not kept
    assert "reranker rejected" in ws.state.steps["rag.docs"]["summary"]
    rag = ws.rag("docs", with_generator=False)
    assert rag.block.reranker is None and rag.retrieve("handover margin of site Jena", top_k=1)
