"""RAG: exact near-duplicate detection, citations, located JSONL errors, corpus fingerprints, splitting modes,
call-time top_k, the cross-encoder reranker, the exported pipeline YAML run end to end (endpoint and local model),
plan-time and run-time errors for missing models, and `dsl ask` in text form."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.rag.haystack import (
    RagSystem,
    shingles,
    citations,
    content_hash,
    dedupe,
    ingest,
    jaccard,
)
from sdk.planner import PlanProblems
from tests.conftest import run_dsl
from tests.test_rag import _Upstream, recipe

BM25 = 'rag kw { corpus = corpus.c  retriever = bm25  top_k = 2 }'


def _chunk(text: str) -> dict:
    return {"id": text[:10], "content": text, "meta": {"content_hash": content_hash(text)}}


# ------------------------------------------------------------------------------------------ fast, no models


def test_near_dedupe_drops_exactly_the_chunks_a_brute_force_comparison_drops() -> None:
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(60):
        words = [rng.choice(vocab) for _ in range(rng.randint(8, 60))]
        texts.append(" ".join(words))
        for _ in range(rng.randint(0, 2)):  # variants with a few words changed
            v = list(words)
            for _ in range(rng.randint(1, 4)):
                v[rng.randrange(len(v))] = rng.choice(vocab)
            texts.append(" ".join(v))
    rng.shuffle(texts)
    chunks = [_chunk(t) for t in texts]
    for threshold in (0.5, 0.7, 0.85, 0.95):
        kept, exact, near = dedupe(chunks, "near", threshold)
        # brute force: keep a chunk unless it equals or is near an earlier kept one
        expected: list[str] = []
        for t in dict.fromkeys(texts):
            if all(jaccard(shingles(t), shingles(k)) < threshold for k in expected):
                expected.append(t)
        assert [c["content"] for c in kept] == expected, threshold
        assert exact == len(texts) - len(set(texts)) and near == len(set(texts)) - len(expected)
    assert dedupe(chunks, "near", 0.85)[2] > 0


def test_exact_dedupe_ignores_case_and_whitespace_and_none_keeps_all() -> None:
    chunks = [_chunk("The INVITE starts a call."), _chunk("the invite   starts a call."), _chunk("BYE ends it.")]
    kept, exact, near = dedupe(chunks, "exact", 0.85)
    assert [c["content"] for c in kept] == ["The INVITE starts a call.", "BYE ends it."] and (exact, near) == (1, 0)
    assert dedupe(chunks, "none", 0.85) == (chunks, 0, 0)


def test_citations_are_read_in_every_common_form_and_bounded_by_the_sources() -> None:
    assert citations("INVITE [2] starts it [1][3], see also [2, 4] and [9].", 4) == [1, 2, 3, 4]
    assert citations("no citation here (1)", 3) == []


def test_a_malformed_jsonl_row_is_located_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "n.jsonl").write_text('{"body": "fine text about SIP calls"}\n{"body": oops}\n')
    path = tmp_path / "r.dsl"
    path.write_text('domain r {\n  corpus c { paths = ["docs/*.jsonl"]  text_field = "body" }\n}\n')
    with pytest.raises(PlanProblems) as e:  # read at plan time (sdk.datachecks), before any step runs
        sdk.apply(load(path))
    assert "docs/n.jsonl:2" in str(e.value) and "malformed JSON" in str(e.value)
    (tmp_path / "docs" / "n.jsonl").write_text('{"body": "fine text about SIP calls"}\n{"text": "wrong field"}\n')
    with pytest.raises(PlanProblems) as e:
        sdk.apply(load(path))
    assert "docs/n.jsonl:2" in str(e.value) and "'body'" in str(e.value)
    rows = ["The INVITE request starts a SIP call.", "The BYE request ends a SIP call."]
    (tmp_path / "docs" / "n.jsonl").write_text("\n" + "".join(json.dumps({"body": r, "n": 1}) + "\n" for r in rows))
    assert sdk.apply(load(path)).ok
    art = sdk.workspace.open_workspace(path).artifact("corpus.c")
    chunks = [json.loads(x) for x in (art.path / "chunks.jsonl").read_text().splitlines()]
    assert [(c["content"], c["meta"]["line"]) for c in chunks] == [(rows[0], 2), (rows[1], 3)]


def test_the_corpus_step_reruns_when_a_file_changes_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("The Session Initiation Protocol sets up calls between user agents.")
    path = tmp_path / "r.dsl"
    path.write_text('domain r {\n  corpus c { paths = ["docs/*.txt"] }\n}\n')
    assert sdk.apply(load(path)).ran == ["corpus.c"]
    assert sdk.apply(load(path)).ran == []
    (tmp_path / "docs" / "a.txt").write_text("The IP Multimedia Subsystem keeps session state in the S-CSCF node.")
    assert sdk.apply(load(path)).ran == ["corpus.c"]
    chunks = (sdk.workspace.open_workspace(path).artifact("corpus.c").path / "chunks.jsonl").read_text()
    assert "S-CSCF" in chunks and "Session Initiation" not in chunks


@pytest.mark.parametrize("by,length,overlap,expected", [
    ("line", 2, 1, ["line one about SIP\nline two about IMS", "line two about IMS\nline three about RTP",
                    "line three about RTP\nline four about ICE"]),
    ("passage", 1, 0, ["first passage about SIP calls.", "second passage about IMS nodes."]),
    ("word", 4, 1, ["one two three four", "four five six seven", "seven eight nine"]),
])
def test_splitting_by_line_passage_and_word_with_overlap(tmp_path: Path, by: str, length: int, overlap: int,
                                                         expected: list[str]) -> None:
    text = {"line": "line one about SIP\nline two about IMS\nline three about RTP\nline four about ICE\n",
            "passage": "first passage about SIP calls.\n\nsecond passage about IMS nodes.\n",
            "word": "one two three four five six seven eight nine"}[by]
    (tmp_path / "a.txt").write_text(text)
    path = tmp_path / "r.dsl"
    path.write_text(f'domain r {{\n  corpus c {{ paths = ["a.txt"]  split = {{ by = {by}, length = {length}, '
                    f'overlap = {overlap} }}  min_chars = 0  dedupe = none }}\n}}\n')
    spec = load(path)
    chunks, metrics = ingest(spec, spec.corpus["c"], "c", print)
    assert [c["content"] for c in chunks] == expected
    assert [c["meta"]["chunk_index"] for c in chunks] == list(range(len(expected)))
    assert all(c["meta"]["source"] == "a.txt" and "page" not in c["meta"] for c in chunks)
    assert [c["meta"]["line"] for c in chunks] == {"line": [1, 2, 3], "passage": [1, 3], "word": [1, 1, 1]}[by]
    assert [c["id"] for c in chunks] == [f"a.txt#{i}" for i in range(len(expected))]
    assert metrics["chunks"] == len(expected) and metrics["files"] == 1


def test_a_missing_local_reranker_or_embedder_folder_is_caught_at_plan_time(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'rag kw { corpus = corpus.c  retriever = bm25  reranker = "./models/xenc" }\n'
                            '  rag vec { corpus = corpus.c  retriever = dense  embedder = "./models/emb" }')
    with pytest.raises(PlanProblems) as err:
        sdk.plan(load(path))
    text = str(err.value)
    assert "reranker folder './models/xenc' does not exist" in text and "embedder folder './models/emb'" in text


# ------------------------------------------------------------------------------------- with models (slow)


@pytest.fixture(scope="module")
def bm25_applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rag-bm25")
    path = recipe(folder, BM25)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    return path


def test_top_k_can_be_raised_or_lowered_at_call_time(bm25_applied: Path) -> None:
    ws = sdk.workspace.open_workspace(bm25_applied)
    rag = ws.rag("kw")
    assert len(rag.retrieve("Which codec does WebRTC use on the page that talks?")) == 2
    five = rag.retrieve("Which codec does WebRTC use on the page that talks?", top_k=5)
    assert len(five) == 5 and five[0]["meta"]["source"] == "docs/codec.html"
    assert [d["score"] for d in five] == sorted((d["score"] for d in five), reverse=True)
    assert [d["id"] for d in rag.retrieve("Which codec does WebRTC use on the page that talks?", top_k=1)] == [five[0]["id"]]


def test_ask_prints_the_answer_placeholder_and_numbered_sources(bm25_applied: Path) -> None:
    proc = run_dsl("ask", str(bm25_applied), "Which codec does WebRTC use on the page that talks?")
    assert proc.returncode == 0, proc.stderr
    assert "(retrieval only: no generator)" in proc.stdout and "[1] docs/codec.html" in proc.stdout
    assert "[2]" in proc.stdout
    bad = run_dsl("ask", str(bm25_applied), "q", "--system", "rag.nope")
    assert bad.returncode != 0 and "no rag block 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_reranker_reorders_the_candidates_by_a_local_cross_encoder(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sdk.backends.rag.haystack import resolve_embedder

    minilm = resolve_embedder("sentence-transformers/all-MiniLM-L6-v2")
    xenc = tmp_path / "xenc"  # a real cross-encoder folder: MiniLM with a one-logit classification head
    AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1).save_pretrained(xenc)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(xenc)
    path = recipe(tmp_path, 'rag rr { corpus = corpus.c  retriever = bm25  top_k = 3  reranker = "xenc" }\n  ' + BM25)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(path)
    rag = ws.rag("rr")
    assert "ranker" in rag.pipeline.graph.nodes
    question = "How are NAT traversal problems solved on the page that talks about the calls?"
    ranked = rag.retrieve(question)
    pool = ws.rag("kw").retrieve(question, top_k=20)
    assert len(ranked) == 3 and {d["id"] for d in ranked} <= {d["id"] for d in pool}
    model = CrossEncoder(str(xenc))
    logits = model.predict([(question, d["content"]) for d in pool])
    by_model = [d["id"] for _, d in sorted(zip(logits, pool), key=lambda x: -x[0])][:3]
    assert [d["id"] for d in ranked] == by_model
    assert all(0.0 <= d["score"] <= 1.0 for d in ranked)
    yaml = (ws.artifact("rag.rr").path / "pipeline.yaml").read_text()
    assert "SentenceTransformersSimilarityRanker" in yaml


def test_the_exported_pipeline_answers_end_to_end_through_an_endpoint(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from haystack import Pipeline
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.document_stores.types import DuplicatePolicy

    upstream = _Upstream(reply="Opus [1].")
    monkeypatch.setenv("UPSTREAM_KEY", "sk-export-456")
    try:
        path = recipe(tmp_path, f'rag kw {{ corpus = corpus.c  retriever = bm25  top_k = 2  generator = endpoint {{ '
                                f'url = "http://127.0.0.1:{upstream.port}/v1", model = "big", api_key = env("UPSTREAM_KEY") }} }}')
        assert sdk.apply(load(path)).ok
        art = sdk.workspace.open_workspace(path).artifact("rag.kw")
        assert art.outputs["pipeline_generator"] == "endpoint"
        text = (art.path / "pipeline.yaml").read_text()
        assert "sk-export-456" not in text and "UPSTREAM_KEY" in text
        pipe = Pipeline.loads(text)
        assert set(pipe.graph.nodes) == {"bm25", "prompt_builder", "llm"}
        # the YAML holds the pipeline, the store's documents live in store.json
        saved = InMemoryDocumentStore.load_from_disk(str(art.path / "store.json")).filter_documents()
        pipe.get_component("bm25").document_store.write_documents(saved, policy=DuplicatePolicy.OVERWRITE)
        q = "Which codec does WebRTC use on the page that talks?"
        out = pipe.run({"bm25": {"query": q}, "prompt_builder": {"question": q}})
        assert out["llm"]["replies"][0].text == "Opus [1]."
        sent = upstream.requests[-1]
        assert sent["auth"] == "Bearer sk-export-456" and sent["body"]["model"] == "big"
        prompt = sent["body"]["messages"][0]["content"]
        assert "[1] " in prompt and "[2] " in prompt and "Opus is the codec of WebRTC" in prompt and q in prompt
    finally:
        upstream.stop()


def test_the_exported_pipeline_holds_the_local_generator_and_runs(tmp_path: Path) -> None:
    from haystack import Pipeline
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.document_stores.types import DuplicatePolicy

    from tests._tiny import make_tiny_model

    make_tiny_model(tmp_path / "model")
    path = recipe(tmp_path, 'rag kw { corpus = corpus.c  retriever = bm25  top_k = 2  generator = base_model.tiny  '
                            'max_new_tokens = 4 }', 'base_model tiny { path = "model" }')
    assert sdk.apply(load(path)).ok
    art = sdk.workspace.open_workspace(path).artifact("rag.kw")
    assert art.outputs["pipeline_generator"] == "local"
    pipe = Pipeline.loads((art.path / "pipeline.yaml").read_text())
    params = pipe.to_dict()["components"]["llm"]["init_parameters"]
    assert params["huggingface_pipeline_kwargs"]["task"] == "text-generation"
    assert params["huggingface_pipeline_kwargs"]["model"] == str((tmp_path / "model").resolve())
    saved = InMemoryDocumentStore.load_from_disk(str(art.path / "store.json")).filter_documents()
    pipe.get_component("bm25").document_store.write_documents(saved, policy=DuplicatePolicy.OVERWRITE)
    out = pipe.run({"bm25": {"query": "SIP call"}, "prompt_builder": {"question": "What starts a SIP call?"}})
    assert isinstance(out["llm"]["replies"][0].text, str)


def test_an_embedder_that_cannot_be_loaded_is_named(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'rag vec { corpus = corpus.c  retriever = dense  embedder = "no-such-org/no-such-model" }')
    from sdk.planner import PlanProblems

    with pytest.raises(PlanProblems, match="no-such-org/no-such-model"):  # offline and not cached: said at plan time
        sdk.apply(load(path))
    result = sdk.apply(load(path), skip_checks=True)  # and named by the step itself when it runs
    assert result.failed and "cannot load the embedder 'no-such-org/no-such-model'" in result.failed[0].error
    assert not list((tmp_path / ".dsl" / "r" / "artifacts").glob("rag.vec*/*"))


def test_pgvector_holds_every_chunk_keeps_no_secret_and_names_a_stopped_server(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pgserver = pytest.importorskip("pgserver", reason="pgserver (PostgreSQL + pgvector from PyPI) is not installed")
    from sdk.errors import DslError

    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    stopped = False
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        uri = server.get_uri()
        monkeypatch.setenv("PG_CONN", uri)
        path = recipe(tmp_path / "w", 'rag kw { corpus = corpus.c  retriever = bm25  top_k = 2  '
                                      'store = pgvector { connection = env("PG_CONN"), table = "kw_chunks" } }')
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        ws = sdk.workspace.open_workspace(path)
        chunks = ws.artifact("corpus.c").metrics["chunks"]
        rows = server.psql("SELECT count(*) FROM kw_chunks;")
        assert f" {chunks}\n" in rows, rows
        # PostgreSQL full-text search (plainto_tsquery) needs every query word in the chunk
        docs = ws.rag("kw").retrieve("WebRTC codec")
        assert docs and docs[0]["meta"]["source"] == "docs/codec.html" and docs[0]["meta"]["chunk_index"] == 0
        for f in (tmp_path / "w" / ".dsl").rglob("*"):
            if f.is_file():
                assert uri.encode() not in f.read_bytes() and b"host=/" not in f.read_bytes(), f
        server.cleanup()
        stopped = True
        with pytest.raises(DslError, match="cannot reach the pgvector store"):
            ws.rag("kw")
    finally:
        if not stopped:
            server.cleanup()


def test_an_unset_connection_variable_is_named_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_CONN_UNSET", raising=False)
    path = recipe(tmp_path, 'rag vec { corpus = corpus.c  store = pgvector { connection = env("PG_CONN_UNSET") } }')
    from sdk.planner import PlanProblems

    with pytest.raises(PlanProblems, match="environment variable PG_CONN_UNSET is not set"):  # the plan-time check
        sdk.apply(load(path))
    result = sdk.apply(load(path), skip_checks=True)  # past the check, the step still names it
    assert [o.id for o in result.failed] == ["rag.vec"]
    assert "environment variable PG_CONN_UNSET, which is not set" in result.failed[0].error
