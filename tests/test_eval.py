"""Evaluation: metric functions, eval-set mappings of public formats, checks, side-by-side systems with
bootstrap CIs, gates, contamination, reports, endpoint failures, and lm-evaluation-harness interop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import Request

import sdk
import sdk.workspace
from dsl.parser import load
from sdk import metrics as M
from sdk.errors import DataError
from sdk.evalsets import check, export_lm_eval, load_items
from sdk.spec import EvalBlock
from tests._openai_server import OpenAIServer, chat_completion
from tests._tiny import make_tiny_model
from tests.conftest import ROOT, run_dsl

# --------------------------------------------------------------------------------------------- metrics

def test_metric_functions() -> None:
    assert M.exact_match("The INVITE.", ["invite"]) == 1.0 and M.exact_match("BYE", ["invite"]) == 0.0
    assert M.token_f1("the invite request", ["INVITE request starts"]) == pytest.approx(0.8)
    assert M.accuracy(["yes", "No"], ["yes", "no"]) == 1.0
    assert M.macro_f1(["yes", "yes", "no"], ["yes", "no", "no"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert M.citation_precision(["a", "b"], ["a"]) == 0.5 and M.citation_recall(["a", "b"], ["a", "c"]) == 0.5
    assert M.citation_precision([], ["a"]) is None and M.citation_recall(["a"], []) is None
    assert M.recall_at_k(["x", "a", "b"], ["a"], 1) == 0.0 and M.recall_at_k(["x", "a"], ["a"], 2) == 1.0
    assert M.reciprocal_rank(["x", "y", "a"], ["a"]) == pytest.approx(1 / 3)
    assert M.parse_choice("Option 2", ["a", "b", "c"]) == 1 and M.parse_choice("(C) because", ["a", "b", "c"]) == 2
    assert M.parse_choice("I think it is beta", ["alpha", "beta"]) == 1
    assert M.perplexity(0.0, 10) == 1.0


def test_bootstrap_is_reproducible_and_honest() -> None:
    values = [1.0] * 30 + [0.0] * 70
    a = M.bootstrap_ci(values, 1000, 0.95, seed=3)
    assert a == M.bootstrap_ci(values, 1000, 0.95, seed=3)
    mean, lo, hi = a
    assert mean == pytest.approx(0.3) and lo < 0.3 < hi and 0.05 < hi - lo < 0.3
    assert M.paired_bootstrap_p([1.0] * 50, [0.0] * 50, 500) < 0.01
    assert M.paired_bootstrap_p([1.0, 0.0] * 20, [0.0, 1.0] * 20, 500) == 1.0


# --------------------------------------------------------------------------------------- eval sets

def _block(**kw):  # type: ignore[no-untyped-def]
    return EvalBlock(systems=["base_model.x"], **kw)


def test_public_formats_map_through_fields(tmp_path: Path) -> None:
    import pyzipper

    pubmed = {"111": {"QUESTION": "Does aspirin help?", "final_decision": "yes", "CONTEXTS": ["a", "b"]},
              "222": {"QUESTION": "Is X toxic?", "final_decision": "maybe", "CONTEXTS": ["c"]}}
    (tmp_path / "pq.json").write_text(json.dumps(pubmed))
    items = load_items(tmp_path / "pq.json", _block(data="pq.json", fields={"question": "QUESTION", "label": "final_decision",
                                                                           "answer": None, "context": "CONTEXTS"}))
    assert [(i.id, i.label, i.context) for i in items] == [("111", "yes", "a\nb"), ("222", "maybe", "c")]
    (tmp_path / "h.tsv").write_text("label\ttext\tslice\nYes\tA statement offered\tx\nNo\tA verbal act\ty\n")
    items = load_items(tmp_path / "h.tsv", _block(data="h.tsv", fields={"question": "text", "label": "label", "answer": None}))
    assert [i.label for i in items] == ["Yes", "No"] and items[0].line == 2
    tele = {"question 0": {"question": "What is SIP?", "option 1": "A codec", "option 2": "A signalling protocol",
                           "answer": "option 2: A signalling protocol", "category": "Lexicon"}}
    with pyzipper.AESZipFile(tmp_path / "t.zip", "w", encryption=pyzipper.WZ_AES) as z:
        z.setpassword(b"pw")
        z.writestr("TeleQnA.txt", json.dumps(tele))
    import os

    os.environ["TQ_PASSWORD"] = "pw"
    block = _block(data="t.zip", password={"env": "TQ_PASSWORD"},
                   fields={"question": "question", "choices": "option *", "answer": "answer", "answer_pattern": r"option (\d+)"})
    items = load_items(tmp_path / "t.zip", block)
    assert items[0].choices == ["A codec", "A signalling protocol"] and items[0].answers == ["A signalling protocol"]


@pytest.mark.parametrize("rows,message", [
    (['{"id": "1", "question": "q", "answer": "a"}', "{broken"], "e.jsonl:2: malformed JSON"),
    (['{"id": "1", "question": "q", "answer": "z", "choices": ["a", "b"]}'], "e.jsonl:1: answer 'z' is not among the choices"),
    (['{"id": "1", "question": "", "answer": "a"}'], "e.jsonl:1: row 1 has no question"),
    (["", " "], "e.jsonl: the eval set has no usable items"),
])
def test_bad_eval_rows_name_file_and_line(tmp_path: Path, rows: list[str], message: str) -> None:
    (tmp_path / "e.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        load_items(tmp_path / "e.jsonl", _block(data="e.jsonl"), "e.jsonl")
    assert str(e.value).startswith(message)


def test_eval_set_check_command(tmp_path: Path) -> None:
    rows = [{"id": "1", "question": "What starts a SIP call?", "label": "yes", "answer": "x"},
            {"id": "1", "question": "Is RTP used for media?", "label": "yes", "answer": "x"},
            {"id": "3", "question": "Does SIP carry voice packets itself?", "label": "yes", "answer": "x"},
            {"id": "4", "question": "Is Diameter an AAA protocol?", "label": "no", "answer": "x"}]
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "What starts a SIP call?"}]}) + "\n")
    proc = run_dsl("eval-set", "check", str(tmp_path / "e.jsonl"), "--field", "label=label", "--train",
                   str(tmp_path / "train.jsonl"), "--json")
    data = json.loads(proc.stdout)
    messages = " ".join(f["message"] for f in data["findings"])
    assert proc.returncode == 1 and data["items"] == 4
    assert "duplicate id '1'" in messages and "label imbalance" in messages and "appears verbatim in the training data" in messages


# ------------------------------------------------------------------------------------------ eval step

MC = [{"id": str(i), "question": q, "choices": c, "answer": a, "sources": ["docs/a.txt"]} for i, (q, c, a) in enumerate([
    ("Which request starts a SIP call?", ["INVITE", "BYE", "ACK"], "INVITE"),
    ("Which protocol carries the media?", ["RTP", "SIP", "HTTP"], "RTP"),
    ("Which node stores subscribers?", ["HSS", "UPF", "AMF"], "HSS"),
    ("Which request ends a call?", ["BYE", "INVITE", "OPTIONS"], "BYE"),
    ("Which answer confirms the call?", ["ACK", "CANCEL", "INFO"], "ACK"),
    ("Which codec does VoLTE use?", ["AMR-WB", "MP3", "FLAC"], "AMR-WB"),
])]


def _eval_recipe(tmp: Path, eval_body: str, extra: str = "") -> Path:
    if not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    (tmp / "docs").mkdir(exist_ok=True)
    (tmp / "docs" / "a.txt").write_text("An INVITE request starts a SIP call and BYE ends it. RTP carries media. "
                                        "The HSS stores subscribers. ACK confirms the call. VoLTE uses AMR-WB.")
    (tmp / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in MC) + "\n")
    path = tmp / "r.dsl"
    path.write_text(f'''domain e {{
  base_model tiny {{ path = "model" }}
  corpus docs {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag docs {{ corpus = corpus.docs  generator = base_model.tiny  top_k = 1 }}
  {extra}
  eval mc {{ {eval_body} }}
}}
''')
    return path


def test_side_by_side_report_and_gate_failure(tmp_path: Path) -> None:
    path = _eval_recipe(tmp_path, 'data = "mc.jsonl"  systems = [base_model.tiny, rag.docs]  metrics = [accuracy, recall_at_k]\n'
                                  '  bootstrap = 200  gate = rag.docs.accuracy > rag.docs.accuracy')  # never holds
    result = sdk.apply(load(path))
    assert [o.id for o in result.gate_failures] == ["eval.mc"]
    assert "gate rag.docs.accuracy > rag.docs.accuracy failed" in result.gate_failures[0].error and "margin" in result.gate_failures[0].error
    art = sdk.workspace.open_workspace(path).artifact("eval.mc")
    m = art.metrics
    assert m["task"] == "multiple_choice" and m["n_items"] == 6
    acc = m["base_model.tiny"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert "p_value" in m["comparisons"]["rag.docs"]["accuracy"]
    assert m["rag.docs"]["recall_at_k"]["value"] == 1.0 and "recall_at_k" not in m["base_model.tiny"]
    html = (art.path / "report.html").read_text()
    assert "data:image/png;base64," in html and "FAILED" in html and "<table>" in html
    assert (art.path / "metrics.png").stat().st_size > 1000
    preds = [json.loads(x) for x in (art.path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12
    flags = [p["correct"] for p in preds]
    assert flags == sorted(flags)  # wrong answers first
    proc = run_dsl("report", str(path), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["gate"]["passed"] is False


def test_contamination_is_reported_and_can_fail(tmp_path: Path) -> None:
    long_q = "which request of the session initiation protocol starts a new voice call between two user agents today"
    rows = [{"id": "leak", "question": long_q, "answer": "INVITE"}, {"id": "ok", "question": "What ends a call?", "answer": "BYE"}]
    path = _eval_recipe(tmp_path, 'data = "g.jsonl"  systems = [base_model.tiny]  metrics = [exact_match]  fail_on_contamination = true  max_new_tokens = 2')
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "docs" / "b.txt").write_text(f"Notes: {long_q}. It is INVITE.")
    result = sdk.apply(load(path))
    assert result.gate_failures and "1 eval items overlap the training data" in result.gate_failures[0].error
    art = sdk.workspace.open_workspace(path).artifact("eval.mc")
    assert art.metrics["contaminated_items"] == 1
    assert "leak" in json.loads((art.path / "summary.json").read_text())["contamination"]["items"]


class _FlakyUpstream(OpenAIServer):
    """A real OpenAI-compatible HTTP server that answers `fail_after` requests, then fails with 500."""

    def __init__(self, fail_after: int) -> None:
        self.calls, self.fail_after = 0, fail_after
        super().__init__(self._handle)

    def _handle(self, body: dict, request: Request):  # type: ignore[no-untyped-def]
        from fastapi.responses import JSONResponse

        self.calls += 1
        if self.calls > self.fail_after:
            return JSONResponse({"error": {"message": "down"}}, status_code=500)
        return chat_completion("1", usage=False)


def test_endpoint_failing_mid_run_saves_answers_and_resumes(tmp_path: Path) -> None:
    up = _FlakyUpstream(fail_after=3)
    try:
        ep = f'endpoint {{ url = "http://127.0.0.1:{up.port}/v1", model = "m", max_retries = 1 }}'
        path = _eval_recipe(tmp_path, f'data = "mc.jsonl"  systems = [{ep}]  metrics = [accuracy]  bootstrap = 100')
        result = sdk.apply(load(path))
        assert result.failed
        err = result.failed[0].error
        assert "endpoint:m stopped at item 3" in err and "3 answers are saved" in err
        up.fail_after = 10_000
        calls_before = up.calls
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        assert up.calls - calls_before == 3  # only the items not answered before
        m = sdk.workspace.open_workspace(path).artifact("eval.mc").metrics
        assert m["endpoint:m"]["accuracy"]["value"] == pytest.approx(1.0)  # "1" picks the first option, always gold here
    finally:
        up.stop()


@pytest.mark.slow
def test_lm_eval_harness_runs_the_export_and_agrees(tmp_path: Path) -> None:
    path = _eval_recipe(tmp_path, 'data = "mc.jsonl"  systems = [base_model.tiny]  metrics = [accuracy]  bootstrap = 100')
    assert sdk.apply(load(path)).ok
    ours = sdk.workspace.open_workspace(path).artifact("eval.mc").metrics["base_model.tiny"]["accuracy"]["value"]
    proc = run_dsl("eval-set", "export", str(tmp_path / "mc.jsonl"), "--format", "lm-eval", "--out", str(tmp_path / "task"),
                   "--task", "dsl_mc")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "lm_out"
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    import os

    run = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                          f"pretrained={tmp_path / 'model'},dtype=float32", "--tasks", "dsl_mc", "--include_path",
                          str(tmp_path / "task"), "--device", "cpu", "--batch_size", "1", "--output_path", str(out)],
                         cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result_file = next(out.rglob("results*.json"))
    theirs = json.loads(result_file.read_text())["results"]["dsl_mc"]["acc,none"]
    assert theirs == pytest.approx(ours)


def test_export_writes_yaml_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in MC) + "\n")
    items = load_items(tmp_path / "mc.jsonl", _block(data="mc.jsonl"))
    path = export_lm_eval(items, tmp_path / "out", "t")
    text = path.read_text()
    assert "output_type: multiple_choice" in text and "doc_to_choice" in text
    rows = [json.loads(x) for x in (tmp_path / "out" / "t.jsonl").read_text().splitlines()]
    assert rows[0]["gold"] == 0 and rows[0]["choices"] == ["INVITE", "BYE", "ACK"]
    assert check(items) == []
