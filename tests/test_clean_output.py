"""Clean output: text from corpora, models and upstreams reaches the terminal without control or escape sequences
(OSC window titles and clipboard writes, CSI, C0/C1), and an upstream's error body is summarised with its
credentials masked, never echoed (a real OpenAI-compatible server on loopback; `dsl ask` run as a user runs it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._openai_server import OpenAIServer, chat_completion
from tests.conftest import run_dsl

KEY = "clean-output-key-98765"
OSC = "\x1b]0;pwned-title\x07\x1b]52;c;Y2xpcGJvYXJk\x1b\\\x1b[2J\x1b[31m\x9b1;1H\x07"


def test_terminal_strips_escapes_and_keeps_text() -> None:
    from sdk.cleantext import redact, summary, terminal

    assert terminal(f"one{OSC}two\tthree\r\nfour\x00\x7f\x85") == "onetwo\tthree\nfour"
    assert terminal("\x1bP1$qpayload\x1b\\ok \x9d0;title\x9c done") == "ok  done"
    assert terminal("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    echoed = '{"headers": {"authorization": "Bearer %s", "x-api-key": "k-123456"}} api_key=sk-abcdef123456' % KEY
    masked = redact(echoed)
    assert KEY not in masked and "k-123456" not in masked and "sk-abcdef123456" not in masked
    assert "Bearer ***" in masked
    assert summary("line one\n\x1b]0;x\x07line two " + "y" * 300, limit=40).endswith("...")
    assert "\n" not in summary("a\nb") and "topsecret" not in summary("echo topsecret", ["topsecret"])


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, OpenAIServer]]:
    import sdk
    from dsl.parser import load
    from fastapi.responses import JSONResponse

    def handler(body: dict[str, Any], request: Any) -> Any:
        if body["model"] == "echo500":  # an upstream whose error page echoes the request's headers
            sent = f"Authorization: {request.headers.get('authorization')}; all headers: {dict(request.headers)}"
            return JSONResponse({"error": {"message": f"boom; you sent {sent}"}}, status_code=500)
        return chat_completion(f"SIP starts with INVITE{OSC} [1]", model=body["model"])

    server = OpenAIServer(handler)
    tmp = tmp_path_factory.mktemp("clean")
    (tmp / "docs").mkdir()
    (tmp / "docs" / "sip.txt").write_text(f"A SIP call starts with an INVITE request.{OSC} It is answered by 200 OK.\n")
    (tmp / "docs" / "ims.txt").write_text("The HSS stores the subscriber profiles of the IMS network.\n")
    ep = f'url = "http://127.0.0.1:{server.port}/v1", api_key = env("CLEAN_KEY"), timeout = 5, max_retries = 0'
    (tmp / "r.dsl").write_text(f'''domain clean {{
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag good {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = endpoint {{ {ep}, model = "osc" }} }}
  rag bad  {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = endpoint {{ {ep}, model = "echo500" }} }}
}}
''')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLEAN_KEY", KEY)
        result = sdk.apply(load(tmp / "r.dsl"))
    assert result.ok, [o.error for o in result.failed]
    yield tmp / "r.dsl", server
    server.stop()


def test_dsl_ask_prints_no_escape_sequence_from_a_chunk_or_an_answer(applied: tuple[Path, OpenAIServer]) -> None:
    recipe, _ = applied
    r = run_dsl("ask", str(recipe), "How does a SIP call start?", "--system", "rag.good", env={"CLEAN_KEY": KEY})
    assert r.returncode == 0, r.stderr
    assert "INVITE" in r.stdout and "[1] docs/sip.txt" in r.stdout  # the answer and its chunk are printed
    for seq in ("\x1b", "\x07", "\x9b", "\x9c", "pwned-title", "Y2xpcGJvYXJk"):
        assert seq not in r.stdout + r.stderr, repr(seq)
    r = run_dsl("ask", str(recipe), "How does a SIP call start?", "--system", "rag.good", "--json", env={"CLEAN_KEY": KEY})
    assert r.returncode == 0 and "\x1b" not in r.stdout  # JSON escapes them (\u001b): the data stays whole
    assert "\x1b]0;pwned-title" in json.loads(r.stdout)["answer"]


def test_an_upstream_500_echoing_the_auth_header_is_not_printed(applied: tuple[Path, OpenAIServer]) -> None:
    recipe, _ = applied
    r = run_dsl("ask", str(recipe), "How does a SIP call start?", "--system", "rag.bad", env={"CLEAN_KEY": KEY})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "answered 500" in r.stderr and "boom" in r.stderr  # summarised: what failed, and what it said
    assert KEY not in r.stdout + r.stderr and "Authorization: Bearer ***" in r.stderr
    assert len(r.stderr) < 400  # a summary, not the body


# ------------------------------------------------------------------------------------------- bounded inputs


def _eval_block() -> Any:
    from sdk.spec.objects import FieldMap

    return type("Block", (), {"fields": FieldMap(), "format": "auto", "password": None})()


def test_a_10_mb_eval_question_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.errors import DataError
    from sdk.evalsets import load_items

    path = tmp_path / "e.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"id": "1", "question": "fine?", "answer": "yes"}) + "\n")
        f.write(json.dumps({"id": "2", "question": "q" * 10_000_000, "answer": "no"}) + "\n")
    with pytest.raises(DataError) as caught:
        load_items(path, _eval_block(), "e.jsonl")
    assert str(caught.value).startswith("e.jsonl:2: the line is longer than the limit of 8,388,608 bytes")
    assert "DSL_MAX_LINE_BYTES" in (caught.value.diagnostics[0].hint or "")
    monkeypatch.setenv("DSL_MAX_LINE_BYTES", "0")  # no line limit: the item limit still holds
    with pytest.raises(DataError, match=r"^e\.jsonl:2: row 2: the question is 10,000,000 characters, over the limit"):
        load_items(path, _eval_block(), "e.jsonl")
    monkeypatch.setenv("DSL_MAX_ITEM_CHARS", "0")  # both raised: the whole set loads
    assert [len(i.question) for i in load_items(path, _eval_block(), "e.jsonl")] == [5, 10_000_000]


def test_prompts_are_cut_to_the_context_by_one_rule(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from sdk.backends.rag.system import LocalChatGenerator
    from sdk.limits import fit
    from tests._tiny import tiny_model_dir

    assert fit(list(range(100)), 50, 10) == list(range(60, 100))  # the last context - max_new_tokens tokens
    assert fit(list(range(100)), 10, 20) == [99] and fit([1, 2], 50, 10) == [1, 2]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir(tmp_path))
    config = SimpleNamespace(max_position_embeddings=64)
    generator = LocalChatGenerator(SimpleNamespace(pipeline=SimpleNamespace(tokenizer=tok, model=SimpleNamespace(config=config))))
    prompt = "the network " * 5000 + "Question: which band?"
    cut = generator.fit(prompt, 8)
    assert cut.endswith("which band?") and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 64 - 8
    assert generator.fit("Question: which band?", 8) == "Question: which band?"  # what fits is untouched


def test_the_recipe_raises_the_size_limits_and_a_launcher_gets_them(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The domain's max_line_bytes / max_item_chars win over the environment in the plan's data checks (located
    errors without them, a clean plan with them), and a launched job's processes get them as variables."""
    from sdk import limits
    from sdk.planner import PlanProblems, plan
    from sdk.state import State
    from dsl.parser import loads

    (tmp_path / "e.jsonl").write_text(json.dumps({"id": "1", "question": "q" * 3000, "answer": "a"}) + "\n")
    body = ('eval e {{\n  data = "e.jsonl"\n  metrics = [exact_match]\n  systems = [base_model.m]\n}}\n'
            'base_model m {{ id = "tiny" }}\n')
    monkeypatch.setenv("DSL_MAX_ITEM_CHARS", "1000000")  # the recipe's value wins over the environment's
    strict = loads(f"domain d {{\n  max_item_chars = 1000\n{body.format()}}}\n", base_dir=tmp_path)
    with pytest.raises(PlanProblems) as caught:
        plan(strict, State(), backend="test")
    assert "the question is 3,000 characters, over the limit of 1,000" in str(caught.value)
    assert "max_item_chars" in str(caught.value.problems[0].hint or caught.value)
    loose = loads(f"domain d {{\n  max_item_chars = 0\n  max_line_bytes = 100\n{body.format()}}}\n", base_dir=tmp_path)
    with pytest.raises(PlanProblems, match="the line is longer than the limit of 100 bytes"):
        plan(loose, State(), backend="test")
    ok = loads(f"domain d {{\n  max_item_chars = 5000\n{body.format()}}}\n", base_dir=tmp_path)
    assert plan(ok, State(), backend="test").steps  # fits: planned
    with limits.scope(ok):
        assert limits.child_env() == {"DSL_MAX_ITEM_CHARS": "5000"}
    assert limits.child_env() == {}  # the scope ends with the plan: nothing leaks into the next recipe


def test_a_relayed_progress_shows_as_plain_lines(tmp_path: Path) -> None:
    """What a launched job's rank 0 reports (sdk.progress.Relay, a file) is shown by the launching process like
    its own progress: plain lines with the step, %, rate and the latest fields, and a final line."""
    import io
    import threading

    from sdk.progress import Progress, Relay, mirror

    ticks = iter(range(1000))
    relay = Relay(tmp_path / "p.jsonl", every=0.0, clock=lambda: float(next(ticks)))
    with relay.task("finetune.x: fine-tuning", total=4) as t:
        for _ in range(4):
            t.advance()
        t.update(loss=1.25)
    shown = io.StringIO()
    stop = threading.Event()
    stop.set()  # the ranks have finished: read the file to its end, then return
    with Progress(enabled=False, plain=True, stream=shown, after=0.0) as progress:
        mirror(tmp_path / "p.jsonl", progress, stop)
    lines = shown.getvalue().splitlines()
    assert any("finetune.x: fine-tuning: 4/4 (100%)" in x and "loss=1.25" in x for x in lines), lines
    assert lines[-1].endswith("finished in 0m00s") or "finished in" in lines[-1], lines


def test_status_and_errors_print_no_escape_sequence_from_workdir_or_file_names(tmp_path: Path) -> None:
    """What a workdir or a shared folder carries (a step's summary and error in state.json, a corpus file's name
    quoted by an error) reaches the terminal without its escape sequences, through dsl status and the error path
    every command shares."""
    import sdk
    from dsl.parser import load
    from tests._specs import write_small

    path = write_small(tmp_path)
    assert sdk.apply(load(path), backend="test").ok
    state_file = tmp_path / ".dsl" / "demo" / "state.json"
    data = json.loads(state_file.read_text())
    data["steps"]["corpus.docs"]["summary"] = f"2 files{OSC} -> 2 chunks"
    data["steps"]["corpus.docs"]["error"] = f"an old failure{OSC}"
    state_file.write_text(json.dumps(data))
    r = run_dsl("status", str(path))
    assert r.returncode == 0 and "2 files -> 2 chunks" in r.stdout and "an old failure" in r.stdout, r.stdout
    assert not any(c in r.stdout for c in "\x1b\x07\x9b"), repr(r.stdout)

    (tmp_path / "corpus" / f"big{OSC}.txt").write_text("word " * 300_000)  # 1.4 MiB, over a 1 MiB limit
    path.write_text(path.read_text().replace("corpus docs {", "corpus docs {\n    max_file_mb = 1", 1))
    r = run_dsl("validate", str(path))
    assert r.returncode == 1 and "over the corpus limit of 1 MiB" in r.stderr, r.stderr
    assert not any(c in r.stderr for c in "\x1b\x07\x9b"), repr(r.stderr)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_review_export_carries_no_escape_sequence_and_reads_back_unchanged(tmp_path: Path, suffix: str) -> None:
    """A teacher's text with escape sequences (OSC, CSI, C1) is exported without them (an expert may `cat` the
    file), a formula stays quoted, and the unchanged export imports as unchanged."""
    from sdk import reviewio as IO

    rows = [{"id": "r1", "question": f"Which band{OSC}?", "answer": "=HYPERLINK(\"http://x\")", "chunk": "c"}]
    out = tmp_path / f"export{suffix}"
    assert IO.export_rows(out, rows, {}) == 1
    text = out.read_text(encoding="utf-8")
    assert not any(c in text for c in "\x1b\x07\x9b") and "Which band?" in text, repr(text)
    if suffix == ".csv":
        assert "'=HYPERLINK" in text
    result = IO.read_import(out, rows, {}, reviewer="ana", shown=out.name)
    assert result["rows"] == 1 and result["entries"] == [] and result["unchanged"] == 1
