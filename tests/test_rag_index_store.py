"""The local index store (``store = index {}``): bm25s and exact numpy search behind Haystack retriever components.

Fast tests (no model): its BM25 equals Haystack's in-memory BM25 (same chunks, same order, same scores) and its
dense search equals Haystack's exact cosine search, ties keep index order, and the retriever registry builds the
same pipelines on it. Slow tests: a recipe with the store applies end to end (bm25, dense, hybrid give the memory
store's results), the artifact holds no absolute path and is read back after the workdir moves (``dsl ask``
included), the exported pipeline YAML loads through Haystack's allowlist, a damaged or missing index file is one
clear error (never a traceback, never an unpickled array), and the store block is validated strictly."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import pytest

pytest.importorskip("haystack")
pytest.importorskip("bm25s")

import numpy as np  # noqa: E402

import sdk  # noqa: E402
import sdk.workspace  # noqa: E402
from dsl.parser import load, loads  # noqa: E402
from sdk.backends.rag import retrievers as R  # noqa: E402
from sdk.backends.rag.index_store import IndexDocumentStore, top  # noqa: E402
from sdk.errors import SpecError  # noqa: E402
from sdk.spec.blocks.rag import RagBlock  # noqa: E402
from tests.conftest import run_dsl  # noqa: E402

WORDS = ("codec opus webrtc sip invite call bye ims cscf hss subscriber diameter rtp media jitter stun turn ice nat "
         "the a of and to in is for über naïve café 5g ü").split()


def _documents(n: int, seed: int = 0, dim: int = 0) -> list[Any]:
    from haystack import Document

    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 25))) + rng.choice(["", ".", " (RFC 3261)", " IMS."])
        emb = [rng.gauss(0, 1) for _ in range(dim)] if dim else None
        docs.append(Document(id=f"d{i}", content=text, meta={"source": f"s{i % 3}.txt"}, embedding=emb))
    return docs


def _memory(docs: list[Any]) -> Any:
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")  # as the rag backend makes it
    store.write_documents(docs)
    return store


# ------------------------------------------------------------------------------------------ fast, no models


def test_bm25_equals_haystacks_in_memory_bm25_chunk_for_chunk(tmp_path: Path) -> None:
    docs = _documents(300, seed=1)
    memory = _memory(docs)
    IndexDocumentStore.build(docs).save(tmp_path / "index")
    index = IndexDocumentStore(str(tmp_path / "index"))  # read back from its files
    rng = random.Random(2)
    queries = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(60)]
    queries += ["Which CODEC does WebRTC use?", "the the the", "UBER naive", "unknownword", "café café 5G"]
    for q in queries:
        want = memory.bm25_retrieval(q, top_k=10)
        got = index.bm25_retrieval(q, top_k=10)
        assert [d.id for d in got] == [d.id for d in want], q
        assert [d.score for d in got] == pytest.approx([d.score for d in want], rel=1e-5), q
    assert index.bm25_retrieval("unknownword zzz", top_k=5) == []  # no shared term: nothing, as Haystack's BM25L


def test_dense_search_is_exact_cosine_as_haystacks_in_memory_retriever(tmp_path: Path) -> None:
    docs = _documents(200, seed=3, dim=16)
    memory = _memory(docs)
    IndexDocumentStore.build(docs).save(tmp_path / "index")
    index = IndexDocumentStore(str(tmp_path / "index"))
    rng = np.random.default_rng(4)
    for _ in range(20):
        q = [float(x) for x in rng.standard_normal(16)]
        want = memory.embedding_retrieval(q, top_k=7)
        got = index.embedding_retrieval(q, top_k=7)
        assert [d.id for d in got] == [d.id for d in want]
        assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=1e-5)
    assert all(d.embedding is None for d in got) and got[0].meta["source"].startswith("s")


def test_top_keeps_ties_in_index_order_and_drops_non_positive_scores_when_asked() -> None:
    scores = np.array([0.5, 2.0, 0.5, 2.0, 0.0, 0.5], dtype=np.float32)
    assert top(scores, 3).tolist() == [1, 3, 0]
    assert top(scores, 4).tolist() == [1, 3, 0, 2]
    assert top(scores, 10, positive=True).tolist() == [1, 3, 0, 2, 5]
    assert top(scores, 0).tolist() == []


def test_a_bm25_only_index_has_no_embeddings_and_says_so(tmp_path: Path) -> None:
    index = IndexDocumentStore.build(_documents(5))
    index.save(tmp_path / "index")
    assert not (tmp_path / "index" / "embeddings.npy").exists()
    with pytest.raises(ValueError, match="holds no embeddings"):
        IndexDocumentStore(str(tmp_path / "index")).embedding_retrieval([0.1, 0.2], top_k=2)


@pytest.mark.parametrize(("name", "reranker"), list(itertools.product(sorted(R.RETRIEVERS), [None, "./ranker"])))
def test_the_registry_builds_each_retriever_on_the_index_store(name: str, reranker: Optional[str]) -> None:
    from sdk.backends.rag.index_store import IndexBM25Retriever, IndexEmbeddingRetriever

    block = RagBlock(corpus="corpus.c", retriever=name, reranker=reranker, top_k=3,  # type: ignore[arg-type]
                     store={"type": "index"})  # type: ignore[arg-type]
    p = R.query_pipeline(block, IndexDocumentStore.build(_documents(6, dim=4)))
    assert set(R.run_inputs(block, "codec?", 3)) == set(p.graph.nodes)
    kinds = {n: type(p.get_component(n)) for n in ("bm25", "dense") if n in p.graph.nodes}
    parts = {"bm25": ["bm25"], "dense": ["dense"], "hybrid": ["bm25", "dense"]}[name]
    assert kinds == {n: {"bm25": IndexBM25Retriever, "dense": IndexEmbeddingRetriever}[n] for n in parts}


def test_bm25_through_the_query_pipeline_on_the_index_store() -> None:
    block = RagBlock(corpus="corpus.c", retriever="bm25", top_k=2, store={"type": "index"})  # type: ignore[arg-type]
    docs = _documents(40, seed=5)
    p = R.query_pipeline(block, IndexDocumentStore.build(docs))
    out = p.run(R.run_inputs(block, "opus webrtc codec", 2), include_outputs_from={"bm25"})
    want = _memory(docs).bm25_retrieval("opus webrtc codec", top_k=2)
    assert [d.id for d in out["bm25"]["documents"]] == [d.id for d in want]


def test_the_store_block_is_validated_strictly() -> None:
    base = 'domain t {{\n  corpus c {{ paths = ["x"] }}\n  rag r {{ corpus = corpus.c  store = {store} }}\n}}\n'
    assert loads(base.format(store="index {}")).rag["r"].store.type == "index"
    with pytest.raises(SpecError) as unknown:
        loads(base.format(store="index { mmap = true }"), path="r.dsl")
    assert "r.dsl:3:" in unknown.value.format() and "unknown attribute 'mmap'" in unknown.value.format()
    assert "it takes no attributes" in unknown.value.format()  # not an empty list of attributes
    with pytest.raises(SpecError) as kind:
        loads(base.format(store="indx {}"), path="r.dsl")
    assert "kinds: memory, index, pgvector" in kind.value.format() and "did you mean 'index'" in kind.value.format()
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RagBlock.model_validate({"corpus": "corpus.c", "store": {"type": "index", "path": "/tmp/x"}})


def test_a_missing_bm25s_is_said_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk.envchecks
    from sdk.planner import PlanProblems
    from tests.test_rag import recipe

    real = sdk.envchecks.importable
    monkeypatch.setattr(sdk.envchecks, "importable", lambda module: module != "bm25s" and real(module))
    path = recipe(tmp_path, 'rag kw { corpus = corpus.c  retriever = bm25  store = index {} }')
    with pytest.raises(PlanProblems, match="store = index needs bm25s") as e:
        sdk.apply(load(path))
    problem = e.value.problems[0]
    assert problem.path == ("rag", "kw", "store") and "pip install bm25s" in (problem.hint or "")
    assert not (tmp_path / ".dsl" / "t" / "artifacts").exists() or not list((tmp_path / ".dsl" / "t" / "artifacts").iterdir())


# ------------------------------------------------------------------------------------------ slow, a real recipe

RAGS = ('rag kw { corpus = corpus.c  retriever = bm25  top_k = 3  store = index {} }\n'
        '  rag vec { corpus = corpus.c  retriever = dense  top_k = 3  store = index {} }\n'
        '  rag docs { corpus = corpus.c  retriever = hybrid  top_k = 3  store = index {} }\n'
        '  rag mkw { corpus = corpus.c  retriever = bm25  top_k = 3 }\n'
        '  rag mdocs { corpus = corpus.c  retriever = hybrid  top_k = 3 }')
QUESTIONS = ["Which codec does WebRTC use?", "What stores subscriber profiles in IMS?",
             "How are NAT traversal problems solved with ICE?", "What starts a SIP call?"]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_rag import recipe

    path = recipe(tmp_path_factory.mktemp("index") / "w", RAGS)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    return path


def _ids(ws: Any, label: str, q: str) -> list[tuple[str, float]]:
    return [(d["id"], d["score"]) for d in ws.rag(label).retrieve(q)]


@pytest.mark.slow
def test_a_recipe_with_the_index_store_retrieves_as_the_memory_store(applied: Path) -> None:
    ws = sdk.workspace.open_workspace(applied)
    for label in ("kw", "vec", "docs"):
        art = ws.artifact(f"rag.{label}")
        assert art.outputs["store"] == "index" and (art.path / "index" / "index.json").is_file()
        assert (art.path / "index" / "embeddings.npy").exists() == (label != "kw")  # bm25 embeds nothing
    for q in QUESTIONS:
        kw, mkw = _ids(ws, "kw", q), _ids(ws, "mkw", q)
        assert [i for i, _ in kw] == [i for i, _ in mkw]
        assert [s for _, s in kw] == pytest.approx([s for _, s in mkw], rel=1e-5)
        assert [i for i, _ in _ids(ws, "docs", q)] == [i for i, _ in _ids(ws, "mdocs", q)]
    assert ws.rag("kw").retrieve("Which codec does WebRTC use?")[0]["meta"]["source"] == "docs/codec.html"
    assert ws.rag("vec").retrieve(QUESTIONS[1])[0]["meta"]["source"] == "docs/ims.md"
    assert ws.rag("docs").retrieve(QUESTIONS[2])[0]["meta"]["source"] == "docs/slides.pdf"
    hybrid = ws.artifact("rag.mdocs")  # the memory store's dense side, the reference for exact search
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    memory = InMemoryDocumentStore.load_from_disk(str(hybrid.path / "store.json"))
    index = IndexDocumentStore(str(ws.artifact("rag.vec").path / "index"))
    for d in memory.filter_documents()[:3]:
        want = [x.id for x in memory.embedding_retrieval(d.embedding, top_k=3)]
        assert [x.id for x in index.embedding_retrieval(d.embedding, top_k=3)] == want


@pytest.mark.slow
def test_the_artifact_is_read_back_after_the_workdir_moves(applied: Path, tmp_path: Path) -> None:
    old = applied.parent
    for label in ("kw", "vec", "docs"):
        for f in sdk.workspace.open_workspace(applied).artifact(f"rag.{label}").path.rglob("*"):
            if f.is_file() and f.suffix in (".json", ".jsonl", ".yaml"):
                assert str(old) not in f.read_text(encoding="utf-8"), f  # relative paths only
    moved = tmp_path / "elsewhere"
    shutil.copytree(old, tmp_path / "copy")
    (tmp_path / "copy").rename(moved)
    ws = sdk.workspace.open_workspace(moved / applied.name)
    assert _ids(ws, "docs", QUESTIONS[0]) == _ids(sdk.workspace.open_workspace(applied), "docs", QUESTIONS[0])
    proc = run_dsl("ask", str(moved / applied.name), "Which codec does WebRTC use?", "--system", "rag.kw", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"][0]["source"] == "docs/codec.html"


def _pickled_array(path: Path) -> None:
    np.save(path, np.array([{"not": "an array"}], dtype=object), allow_pickle=True)


@pytest.mark.slow
@pytest.mark.parametrize(("file", "damage", "named"), [
    ("index.json", lambda f: f.unlink(), "(index/index.json: missing)"),
    ("index.json", lambda f: f.write_text("{not json"), "(index/index.json: unreadable (JSONDecodeError))"),
    ("documents.jsonl", lambda f: f.unlink(), "(index/documents.jsonl: missing)"),
    ("documents.jsonl", lambda f: f.write_text('{"id": "x"}\n'), "(index/documents.jsonl:1: not a chunk"),
    ("bm25/vocab.index.json", lambda f: f.write_text("[1, 2"), "(index/bm25/: unreadable"),
    ("bm25/data.csc.index.npy", lambda f: _pickled_array(f), "(index/bm25/: unreadable (ValueError))"),
    ("embeddings.npy", lambda f: _pickled_array(f), "(index/embeddings.npy: unreadable (ValueError))"),
    ("embeddings.npy", lambda f: np.save(f, np.zeros((2, 3), dtype=np.float32)), "(index/embeddings.npy: shape (2, 3)"),
])
def test_a_damaged_or_missing_index_file_is_one_clear_error(applied: Path, tmp_path: Path, file: str, damage: Any,
                                                            named: str) -> None:
    from sdk.backends.rag.haystack import RagSystem
    from sdk.errors import DslError

    shutil.copytree(applied.parent, tmp_path / "w")
    path = tmp_path / "w" / applied.name
    art = sdk.workspace.open_workspace(path).artifact("rag.docs")
    damage(art.path / "index" / file)
    with pytest.raises(DslError) as opened:  # the store's own check: never an unpickled array, never a traceback
        RagSystem.open(art, with_generator=False)
    assert named in str(opened.value) and "run dsl apply --replace rag.docs" in str(opened.value)
    proc = run_dsl("ask", str(path), "What starts a SIP call?", "--system", "rag.docs")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"index/{file}" in proc.stderr and "run dsl apply" in proc.stderr, proc.stderr  # the manifest's check


@pytest.mark.slow
def test_the_exported_pipeline_loads_through_haystacks_allowlist(applied: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from haystack import Pipeline
    from haystack.core.errors import DeserializationError

    art = sdk.workspace.open_workspace(applied).artifact("rag.kw")
    text = (art.path / "pipeline.yaml").read_text()
    assert "path: index" in text and str(art.path) not in text
    with pytest.raises(DeserializationError):  # our module is not on Haystack's default allowlist
        Pipeline.loads(text)
    pipe = Pipeline.loads(text, allowed_modules=["sdk.backends.rag.index_store"])
    monkeypatch.chdir(art.path)  # the store's path is relative to the artifact folder
    q = "Which codec does WebRTC use?"
    out = pipe.run({"bm25": {"query": q}, "prompt_builder": {"question": q}}, include_outputs_from={"bm25"})
    assert out["bm25"]["documents"][0].meta["source"] == "docs/codec.html"
