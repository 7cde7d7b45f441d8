"""RAG on Haystack: ingestion of every format, deduplication, the index round trip, each retriever, grounded
generation (tiny local model and a real OpenAI-compatible HTTP server), pipeline YAML, pgvector, bad inputs."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from fastapi import Request

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.rag.haystack import RagSystem
from tests._openai_server import OpenAIServer, chat_completion
from tests._tiny import make_tiny_model
from tests.conftest import run_dsl

pytestmark = pytest.mark.slow

TEXT = {
    "sip": "The Session Initiation Protocol sets up calls. An INVITE request starts a call and BYE ends it.",
    "ims": "The IP Multimedia Subsystem uses the S-CSCF to keep session state and the HSS to store subscribers.",
    "codec": "AMR-WB is the wideband codec of VoLTE. Opus is the codec of WebRTC and adapts its bit rate.",
}


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one text line per page, in Helvetica (no library needed)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    f"/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def write_corpus(folder: Path) -> None:
    docs = folder / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    long_sip = TEXT["sip"] + " " + TEXT["ims"] + " It also carries presence and instant messages."
    (docs / "sip.txt").write_text(long_sip)
    (docs / "zz-near.txt").write_text(long_sip.replace("instant messages.", "instant notes."))  # near duplicate
    (docs / "ims.md").write_text("# IMS\n\n" + TEXT["ims"] + "\n\n- bullet about the P-CSCF and the I-CSCF nodes\n")
    (docs / "codec.html").write_text(f"<html><head><title>Codecs</title></head><body><article><h1>Codecs</h1>"
                                     f"<p>{TEXT['codec']}</p></article></body></html>")
    (docs / "notes.jsonl").write_text(json.dumps({"text": "Diameter carries authentication between the HSS and the CSCF nodes."}) + "\n")
    (docs / "slides.pdf").write_bytes(minimal_pdf(["Page one talks about RTP media streams and jitter buffers",
                                                   "Page two talks about STUN TURN and ICE for NAT traversal"]))
    (docs / "zz-copy.txt").write_text(long_sip)  # exact duplicate


def recipe(folder: Path, rag: str = 'rag docs { corpus = corpus.c  retriever = hybrid  top_k = 2 }', extra: str = "") -> Path:
    write_corpus(folder)
    path = folder / "r.dsl"
    path.write_text(f'''domain r {{
  corpus c {{ paths = ["docs/*"]  split = {{ by = word, length = 60, overlap = 5 }}  dedupe = near  min_chars = 10 }}
  {rag}
  {extra}
}}
''')
    return path


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rag")
    path = recipe(folder, 'rag docs { corpus = corpus.c  retriever = hybrid  top_k = 2 }\n'
                          '  rag kw { corpus = corpus.c  retriever = bm25  top_k = 2 }\n'
                          '  rag vec { corpus = corpus.c  retriever = dense  top_k = 2 }')
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    return path


def test_ingestion_of_every_format_with_metadata(applied: Path) -> None:
    ws = sdk.workspace.open_workspace(applied)
    art = ws.artifact("corpus.c")
    chunks = [json.loads(x) for x in (art.path / "chunks.jsonl").read_text().splitlines()]
    sources = {c["meta"]["source"] for c in chunks}
    assert sources == {"docs/sip.txt", "docs/ims.md", "docs/codec.html", "docs/notes.jsonl", "docs/slides.pdf"}
    pdf_pages = sorted({c["meta"]["page"] for c in chunks if c["meta"]["source"] == "docs/slides.pdf"})
    assert pdf_pages == [1, 2]
    assert any("AMR-WB" in c["content"] for c in chunks if c["meta"]["source"] == "docs/codec.html")
    assert all("<p>" not in c["content"] for c in chunks)
    for c in chunks:
        assert set(c["meta"]) >= {"source", "chunk_index", "content_hash"} and c["id"].startswith(c["meta"]["source"])
        assert ("page" in c["meta"]) == (c["meta"]["source"] == "docs/slides.pdf")  # a text file has no pages
        if c["meta"]["source"] in ("docs/sip.txt", "docs/ims.md", "docs/notes.jsonl"):
            assert c["meta"]["line"] >= 1, c  # it names its line instead
    m = art.metrics
    assert m["files"] == 7 and m["exact_duplicates"] >= 1 and m["duplicates_dropped"] == m["exact_duplicates"] + m["near_duplicates"]
    assert m["near_duplicates"] >= 1  # zz-near.txt differs from sip.txt by one word


@pytest.mark.parametrize("label,query,expected", [
    ("kw", "Which codec does WebRTC use?", "docs/codec.html"),
    ("vec", "What stores subscriber profiles in IMS?", "docs/ims.md"),
    ("docs", "How are NAT traversal problems solved with ICE?", "docs/slides.pdf"),
])
def test_each_retriever_finds_the_relevant_document(applied: Path, label: str, query: str, expected: str) -> None:
    ws = sdk.workspace.open_workspace(applied)
    rag = ws.rag(label)
    docs = rag.retrieve(query)
    assert 1 <= len(docs) <= 2 and docs[0]["meta"]["source"] == expected


def test_index_is_saved_and_loaded_without_re_embedding(applied: Path) -> None:
    ws = sdk.workspace.open_workspace(applied)
    art = ws.artifact("rag.docs")
    stored = json.loads((art.path / "store.json").read_text())
    text = json.dumps(stored)
    assert '"embedding"' in text and art.metrics["chunks"] >= 5
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    store = InMemoryDocumentStore.load_from_disk(str(art.path / "store.json"))
    docs = store.filter_documents()
    assert docs and all(d.embedding is not None and len(d.embedding) == 384 for d in docs)


def test_pipeline_yaml_round_trip(applied: Path) -> None:
    from haystack import Pipeline

    art = sdk.workspace.open_workspace(applied).artifact("rag.docs")
    text = (art.path / "pipeline.yaml").read_text()
    pipe = Pipeline.loads(text)
    assert set(pipe.graph.nodes) == {"bm25", "query_embedder", "dense", "joiner", "prompt_builder"}
    assert Pipeline.loads(pipe.dumps()).dumps() == pipe.dumps()


def test_generation_with_a_tiny_local_model_and_citations(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")
    path = recipe(tmp_path, 'rag docs { corpus = corpus.c  top_k = 2  generator = base_model.tiny  max_new_tokens = 8 }',
                  'base_model tiny { path = "model" }')
    assert sdk.apply(load(path)).ok
    ws = sdk.workspace.open_workspace(path)
    out = ws.rag("docs").answer("What starts a SIP call?")
    assert isinstance(out["answer"], str) and [s["index"] for s in out["sources"]] == [1, 2]
    assert out["sources"][0]["source"] == "docs/sip.txt"
    proc = run_dsl("ask", str(path), "What starts a SIP call?", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["system"] == "rag.docs" and data["sources"][0]["source"] == "docs/sip.txt"


class _Upstream(OpenAIServer):
    """A real OpenAI-compatible server that records each request's body and authorization header."""

    def __init__(self, reply: str = "INVITE starts the call [1].") -> None:
        self.requests: list[dict] = []
        self.reply = reply
        super().__init__(self._handle)

    def _handle(self, body: dict, request: Request) -> dict:
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        return chat_completion(self.reply, model=body["model"])


def test_generation_with_an_openai_compatible_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = _Upstream()
    monkeypatch.setenv("UPSTREAM_KEY", "sk-test-123")
    try:
        path = recipe(tmp_path, f'rag docs {{ corpus = corpus.c  top_k = 2  generator = endpoint {{ url = "http://127.0.0.1:{upstream.port}/v1", '
                                f'model = "big", api_key = env("UPSTREAM_KEY") }} }}')
        assert sdk.apply(load(path)).ok
        ws = sdk.workspace.open_workspace(path)
        out = ws.rag("docs").answer("What starts a SIP call?")
        assert out["answer"] == "INVITE starts the call [1]." and out["cited"] == [1]
        sent = upstream.requests[-1]
        assert sent["auth"] == "Bearer sk-test-123" and sent["body"]["model"] == "big"
        assert "[1]" in sent["body"]["messages"][0]["content"]  # the numbered chunks are in the prompt
        for f in (tmp_path / ".dsl").rglob("*"):
            if f.is_file():
                assert b"sk-test-123" not in f.read_bytes()
    finally:
        upstream.stop()


def test_unreadable_and_encrypted_pdfs_are_skipped_with_a_warning(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    path = recipe(tmp_path)
    w = PdfWriter()
    w.add_blank_page(width=200, height=200)
    w.encrypt("secret")
    with open(tmp_path / "docs" / "locked.pdf", "wb") as f:
        w.write(f)
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    messages: list[str] = []
    result = sdk.apply(load(path), log=messages.append)
    assert result.ok
    assert any("locked.pdf" in m and "encrypted" in m for m in messages)
    assert any("broken.pdf" in m for m in messages)
    assert sdk.workspace.open_workspace(path).artifact("corpus.c").metrics["files_skipped"] == 2


def test_only_unreadable_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 nothing")
    path = tmp_path / "r.dsl"
    path.write_text('domain r {\n  corpus c { paths = ["docs/*.pdf"] }\n}\n')
    result = sdk.apply(load(path))
    assert result.failed and "no readable text" in result.failed[0].error and "broken.pdf" in result.failed[0].error


def test_empty_corpus_after_cleaning_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("tiny")
    path = tmp_path / "r.dsl"
    path.write_text('domain r {\n  corpus c { paths = ["docs/*.txt"]  min_chars = 50 }\n}\n')
    result = sdk.apply(load(path))
    assert result.failed and "empty after cleaning and deduplication" in result.failed[0].error


def test_unreachable_store_names_host_and_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PG_CONN", f"postgresql://u:p@127.0.0.1:{port}/db")
    path = recipe(tmp_path, 'rag docs { corpus = corpus.c  store = pgvector { connection = env("PG_CONN") } }')
    from sdk.planner import PlanProblems

    with pytest.raises(PlanProblems, match="no PostgreSQL server answers") as plan_time:  # before any step runs
        sdk.apply(load(path))
    assert "u:p@" not in str(plan_time.value)
    result = sdk.apply(load(path), skip_checks=True)  # the step itself still names it, at run time
    assert result.failed and f"127.0.0.1:{port}" in result.failed[0].error
    assert not list((tmp_path / ".dsl" / "r" / "artifacts").glob("rag.docs/*"))  # nothing half-written
    assert "u:p@" not in (tmp_path / ".dsl" / "r" / "state.json").read_text()


def test_pgvector_store_with_a_real_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pgserver = pytest.importorskip("pgserver", reason="pgserver (PostgreSQL + pgvector from PyPI) is not installed")
    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        uri = server.get_uri()
        monkeypatch.setenv("PG_CONN", uri)
        path = recipe(tmp_path / "w", 'rag docs { corpus = corpus.c  top_k = 2  store = pgvector { connection = env("PG_CONN"), table = "chunks" } }')
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        ws = sdk.workspace.open_workspace(path)
        assert ws.artifact("rag.docs").outputs["store"] == "pgvector"
        docs = ws.rag("docs").retrieve("What stores subscribers in IMS?")
        assert docs and docs[0]["meta"]["source"] == "docs/ims.md"
        table = server.psql("SELECT count(*) FROM chunks;")  # psql's table: a header, a rule, the count
        counts = [int(line) for line in table.split() if line.isdigit()]
        assert counts == [ws.artifact("rag.docs").outputs["chunks"]] and counts[0] > 0, table
    finally:
        server.cleanup()
