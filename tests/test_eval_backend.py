"""The eval step end to end through `dsl apply`: tiny local models side by side with bootstrap CIs and paired
p-values, reproducibility, gates, reports and `dsl report`, OpenAI-compatible endpoints (real HTTP server) with
retries, a failure mid-run and resumption, the LLM judge."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sdk.state import StateStore
from tests._eval import MC_ITEMS, local_model, openai_server, tiny_model, write_mc_set
from tests.conftest import run_dsl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    return tiny_model(folder, 0), tiny_model(folder, 1)


def recipe(folder: Path, body: str, models: tuple[Path, Path]) -> Path:
    write_mc_set(folder / "eval.jsonl")
    text = (f'domain t {{\n  base_model a {{ path = "{models[0]}" }}\n  base_model b {{ path = "{models[1]}" }}\n'
            f"{body}\n}}\n")
    (folder / "r.dsl").write_text(text)
    return folder / "r.dsl"


def state(folder: Path) -> dict:
    return StateStore(folder / ".dsl" / "t").load().steps


def artifact(folder: Path, step: str) -> Path:
    return folder / ".dsl" / "t" / state(folder)[step]["artifact"]


SIDE_BY_SIDE = """  eval mc {
    data = "eval.jsonl"
    metrics = [accuracy, perplexity]
    systems = [base_model.a, base_model.b]
    bootstrap = 300
    seed = 3
    gate = base_model.a.accuracy >= 0.0
  }"""


def test_two_models_side_by_side_report_and_reproducibility(tmp_path: Path, models: tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_dsl("apply", str(recipe(tmp_path, SIDE_BY_SIDE, models)), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    st = state(tmp_path)["eval.mc"]
    assert st["status"] == "done"
    m = st["metrics"]
    assert m["n_items"] == len(MC_ITEMS) and m["task"] == "multiple_choice"
    for sid in ("base_model.a", "base_model.b"):
        acc = m[sid]["accuracy"]
        assert set(acc) >= {"value", "ci_low", "ci_high"}
        assert 0.0 <= acc["ci_low"] <= acc["value"] <= acc["ci_high"] <= 1.0
        ppl = m[sid]["perplexity"]
        assert 1.0 < ppl["ci_low"] < ppl["value"] < ppl["ci_high"]
    assert set(m["comparisons"]) == {"base_model.b"}
    ppl_cmp = m["comparisons"]["base_model.b"]["perplexity"]  # token-weighted, paired over the same items
    assert ppl_cmp["difference"] == pytest.approx(m["base_model.b"]["perplexity"]["value"] - m["base_model.a"]["perplexity"]["value"])
    assert 0.0 < ppl_cmp["p_value"] <= 1.0
    cmp = m["comparisons"]["base_model.b"]["accuracy"]
    assert cmp["difference"] == pytest.approx(m["base_model.b"]["accuracy"]["value"] - m["base_model.a"]["accuracy"]["value"], abs=1e-3)
    assert 0.0 <= cmp["p_value"] <= 1.0

    art = artifact(tmp_path, "eval.mc")
    preds = [json.loads(x) for x in (art / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * len(MC_ITEMS)
    correct = [p["correct"] for p in preds]
    assert correct == sorted(correct)  # wrong answers first
    for sid in ("base_model.a", "base_model.b"):
        mine = [p for p in preds if p["system"] == sid]
        assert all(p["prediction"] in {i: c for i, _, c, _ in MC_ITEMS}[p["id"]] for p in mine)  # always an option
        assert sum(p["correct"] for p in mine) / len(mine) == pytest.approx(m[sid]["accuracy"]["value"], abs=1e-4)
    md = (art / "report.md").read_text()
    assert "| base_model.b |" in md and "p=" in md and "**Gate** `base_model.a.accuracy >= 0`: passed" in md
    assert (art / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (art / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "<link" not in page  # self-contained

    # the same recipe in another workdir gives the same numbers (fixed seeds)
    r2 = run_dsl("apply", str(tmp_path / "r.dsl"), "--workdir", str(tmp_path / "wd2"), timeout=300)
    assert r2.returncode == 0, r2.stderr
    m2 = StateStore(tmp_path / "wd2").load().steps["eval.mc"]["metrics"]
    assert m2["base_model.a"] == m["base_model.a"] and m2["comparisons"] == m["comparisons"]

    # dsl report
    r = run_dsl("report", str(tmp_path / "r.dsl"))
    assert r.returncode == 0, r.stderr
    assert "base_model.b" in r.stdout and "report.html" in r.stdout.replace("\n", "")
    r = run_dsl("report", str(tmp_path / "r.dsl"), "--json")
    data = json.loads(r.stdout)
    assert data["metrics"]["base_model.a"]["accuracy"] == m["base_model.a"]["accuracy"]
    assert Path(data["html"]).is_file()

    # the table's cells are workdir data: an escape sequence in one never reaches the terminal (the summary is hashed;
    # this is the second line of defence)
    from click.testing import CliRunner

    import sdk.report
    from dsl.commands.report import command

    real, osc = sdk.report.table_rows, "\x1b]0;pwned\x07\x1b[2J\x9b1;1H"
    monkeypatch.setattr(sdk.report, "table_rows", lambda summary: (lambda h, b: (h, [[c + osc for c in row] for row in b]))(
        *real(summary)))
    shown = CliRunner().invoke(command, [str(tmp_path / "r.dsl")])
    assert shown.exit_code == 0 and "base_model.b" in shown.output, shown.output
    assert not any(c in shown.output for c in "\x1b\x07\x9b"), repr(shown.output)


def test_failed_gate_keeps_the_report_and_says_why(tmp_path: Path, models: tuple[Path, Path]) -> None:
    body = SIDE_BY_SIDE.replace("gate = base_model.a.accuracy >= 0.0", "gate = base_model.a.accuracy.ci_low >= 0.99")
    r = run_dsl("apply", str(recipe(tmp_path, body, models)), timeout=300)
    assert r.returncode != 0
    assert "gate base_model.a.accuracy.ci_low >= 0.99 failed: base_model.a.accuracy.ci_low = " in r.stderr
    assert "margin -" in r.stderr and "Traceback" not in r.stderr
    assert r.returncode == 4 and re.search(r"(?<!\d)0 failed, 1 gate failed", r.stdout) and "Next:" not in r.stdout
    # the summary's headline: each system's score with its interval, and the gate's verdict
    assert "eval.mc: accuracy on" in r.stdout and "gate base_model.a.accuracy.ci_low >= 0.99: FAILED" in r.stdout
    assert "p = " in r.stdout and "Report (eval.mc):" in r.stdout
    st = state(tmp_path)["eval.mc"]
    assert st["status"] == "gate_failed"
    md = (tmp_path / ".dsl" / "t" / st["artifact"] / "report.md").read_text()
    assert "FAILED (base_model.a.accuracy.ci_low = " in md
    r = run_dsl("report", str(tmp_path / "r.dsl"))
    assert r.returncode == 0 and "FAILED" in r.stdout


def test_report_before_apply_is_a_clear_error(tmp_path: Path, models: tuple[Path, Path]) -> None:
    r = run_dsl("report", str(recipe(tmp_path, SIDE_BY_SIDE, models)))
    assert r.returncode != 0 and "has not been applied" in r.stderr and "Traceback" not in r.stderr


def answer_right(messages: list[dict], n: int) -> str:
    """A fake expert: answers with the number of the right option for questions q1..q4, option 1 otherwise."""
    text = messages[-1]["content"]
    if text.startswith("You grade answers"):
        return "4 - mostly right"
    for _, q, choices, ans in MC_ITEMS[:4]:
        if text.startswith(q):
            return f"Option {choices.index(ans) + 1}"
    return "1"


def test_endpoint_system_scored_by_parsing_with_judge(tmp_path: Path, models: tuple[Path, Path]) -> None:
    with openai_server(answer_right) as url:
        body = f"""  eval mc {{
    data = "eval.jsonl"
    metrics = [accuracy, judge]
    systems = [endpoint {{ url = "{url}", model = "expert", max_retries = 1 }}, base_model.a]
    judge = endpoint {{ url = "{url}", model = "judge" }}
    bootstrap = 200
  }}"""
        r = run_dsl("apply", str(recipe(tmp_path, body, models)), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = state(tmp_path)["eval.mc"]["metrics"]
    expected = sum(c.index(a) == 0 for _, _, c, a in MC_ITEMS[4:]) + 4  # option 1 is right for some of the rest
    assert m["endpoint:expert"]["accuracy"]["value"] == pytest.approx(expected / len(MC_ITEMS), abs=1e-4)
    assert m["endpoint:expert"]["judge"]["value"] == pytest.approx(0.75)  # "4" on a 1..5 scale
    assert "base_model.a" in m["comparisons"]


def test_endpoint_failing_mid_run_stops_then_resumes(tmp_path: Path, models: tuple[Path, Path]) -> None:
    calls: list[str] = []
    healthy = {"ok": False}

    def flaky(messages: list[dict], n: int) -> str | None:
        calls.append(messages[-1]["content"])
        if not healthy["ok"] and len(calls) > 3:
            return None  # 503 from the 4th request on
        return answer_right(messages, n)

    with openai_server(flaky) as url:
        body = f"""  eval mc {{
    data = "eval.jsonl"
    metrics = [accuracy]
    systems = [endpoint {{ url = "{url}", model = "expert", max_retries = 1 }}]
    bootstrap = 200
  }}"""
        path = recipe(tmp_path, body, models)
        r = run_dsl("apply", str(path), timeout=300)
        assert r.returncode != 0
        assert "endpoint:expert stopped at item q4" in r.stderr and "failed after 2 attempts" in r.stderr
        assert "3 answers are saved for endpoint:expert" in r.stderr and "Traceback" not in r.stderr
        assert len(calls) == 5  # three answers, then one try and one retry
        saved = list((tmp_path / ".dsl" / "t" / "checkpoints" / "eval.mc").rglob("answers-*.jsonl"))
        assert len(saved) == 1 and [json.loads(x)["id"] for x in saved[0].read_text().splitlines()] == ["q1", "q2", "q3"]

        healthy["ok"] = True
        calls.clear()
        r = run_dsl("apply", str(path), timeout=300)
        assert r.returncode == 0, r.stderr
        assert len(calls) == len(MC_ITEMS) - 3  # only the items not answered before
        assert not any(c.startswith(MC_ITEMS[0][1]) for c in calls)
    m = state(tmp_path)["eval.mc"]["metrics"]
    assert m["n_items"] == len(MC_ITEMS) and m["endpoint:expert"]["accuracy"]["n"] == len(MC_ITEMS)


def test_secret_key_is_sent_but_never_written(tmp_path: Path, models: tuple[Path, Path]) -> None:
    seen: list[str] = []

    auth: list[str] = []
    with openai_server(lambda msgs, n: "1", auth) as url:
        body = f"""  eval mc {{
    data = "eval.jsonl"
    metrics = [accuracy]
    systems = [endpoint {{ url = "{url}", model = "expert", api_key = env("EVAL_TEST_KEY") }}]
    bootstrap = 200
  }}"""
        r = run_dsl("apply", str(recipe(tmp_path, body, models)), env={"EVAL_TEST_KEY": "sk-very-secret-123"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert auth and set(auth) == {"Bearer sk-very-secret-123"}
    for f in (tmp_path / ".dsl").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md", ".html"):
            seen.append(f.name)
            assert "sk-very-secret-123" not in f.read_text(errors="replace"), f
    assert "report.html" in seen and "state.json" in seen
    assert os.environ.get("EVAL_TEST_KEY") is None


def test_answer_nll_scores_the_answer_after_the_prompt(tmp_path: Path, models: tuple[Path, Path]) -> None:
    local = local_model(tmp_path, models[0])
    prompt = "Question: Which request starts a SIP call?\nAnswer:"
    nll, n = local.answer_nll(prompt, "INVITE")
    assert n == len(local.encode(prompt + " INVITE")) - len(local.encode(prompt)) > 0  # the answer's tokens only
    assert nll == pytest.approx(-local.loglik(prompt, " INVITE")) and nll > 0
    # a prompt that ends in whitespace (a chat template's turn marker) gets no extra space
    assert local.answer_nll(prompt + "\n", "INVITE")[0] == pytest.approx(-local.loglik(prompt + "\n", "INVITE"))
    # conditional on the prompt: context in it changes the score, the token count stays
    with_context = local.answer_nll("Context: an INVITE request starts a call.\n" + prompt, "INVITE")
    assert with_context[1] == n and with_context[0] != pytest.approx(nll)


@pytest.mark.parametrize("answers, calls, ok", [([None, None], 3, True), ([None, None, None], 3, False)])
def test_endpoint_model_retries_through_the_openai_client(answers: list, calls: int, ok: bool) -> None:
    """Server errors are retried by the openai client up to max_retries, then named; nothing else sleeps."""
    from sdk.backends.eval.clients import EndpointModel
    from sdk.errors import DslError
    from sdk.spec import Endpoint

    seen: list[int] = []

    def reply(messages: list[dict], n: int) -> str | None:
        seen.append(n)
        return answers[n - 1] if n <= len(answers) else "fine"

    with openai_server(reply) as url:
        model = EndpointModel(Endpoint(url=url, model="m", max_retries=2))
        if ok:
            assert model.ask("q", 4) == "fine"
        else:
            with pytest.raises(DslError, match="failed after 3 attempts"):
                model.ask("q", 4)
    assert seen == list(range(1, calls + 1))


def test_endpoint_model_does_not_retry_a_client_error() -> None:
    from fastapi import FastAPI  # noqa: F401 - the server below needs the serve extra

    from sdk.backends.eval.clients import EndpointModel
    from sdk.errors import DslError
    from sdk.spec import Endpoint
    from tests._openai_server import OpenAIServer

    calls: list[dict] = []

    def handler(body: dict, request: object) -> object:
        from fastapi.responses import JSONResponse

        calls.append(body)
        return JSONResponse({"error": {"message": "no such model", "type": "invalid_request_error"}}, status_code=404)

    with OpenAIServer(handler) as server:
        model = EndpointModel(Endpoint(url=f"http://127.0.0.1:{server.port}/v1", model="m", max_retries=3))
        with pytest.raises(DslError, match=r"failed after 1 attempt\b"):
            model.ask("q", 4)
    assert len(calls) == 1  # a 404 is an answer, not a hiccup


def test_items_tagged_train_are_held_out_not_scored(tmp_path: Path) -> None:
    (tmp_path / "eval.jsonl").write_text("".join(
        json.dumps({"id": i, "question": q, "choices": c, "answer": a, **({"tags": ["train"]} if n < 4 else {})}) + "\n"
        for n, (i, q, c, a) in enumerate(MC_ITEMS)))
    with openai_server(answer_right) as url:  # right on q1..q4 (the training split), option 1 on the rest
        (tmp_path / "r.dsl").write_text(f"""domain t {{
  eval mc {{
    data = "eval.jsonl"
    metrics = [accuracy]
    systems = [endpoint {{ url = "{url}", model = "expert", max_retries = 1 }}]
    bootstrap = 100
  }}
}}
""")
        r = run_dsl("apply", str(tmp_path / "r.dsl"), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    entry = state(tmp_path)["eval.mc"]
    rest = MC_ITEMS[4:]
    assert entry["metrics"]["n_items"] == len(rest) and entry["metrics"]["held_out_for_training"] == 4
    assert entry["metrics"]["endpoint:expert"]["accuracy"]["value"] == pytest.approx(
        sum(c.index(a) == 0 for _, _, c, a in rest) / len(rest), abs=1e-4)
    assert "4 held out for training" in entry["summary"]
    assert "4 items tagged `train` held out for training" in (artifact(tmp_path, "eval.mc") / "report.md").read_text()
    predicted = (artifact(tmp_path, "eval.mc") / "predictions.jsonl").read_text()
    assert '"q1"' not in predicted and '"q5"' in predicted
