"""`dsl ui` in a real browser: Debian's Chromium driven by Selenium through chromium-driver, against `dsl ui`
started as a subprocess over a small recipe applied twice with the real backends (bm25 rag systems, an eval and
a router: no model to load). Each view's content is checked against the state, the eval summary and the event log;
the playground is asked; an apply (test backend, slowed down) is followed live; two runs are compared; unknown ids
are 404 pages; a workdir with no state says what to run; a port in use and a public address without a token exit 1.

Screenshots go to ``$DSL_UI_SCREENSHOTS`` or a temporary folder (kept by pytest); a failing page test writes
``FAILED-<page>.png`` there too. No page may log a browser console error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests._specs import write_small
from tests.conftest import ROOT

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                                reason="Debian's chromium and chromium-driver are not installed (make test installs them)")

RECIPE = '''domain ui {
  base_model tiny { path = "tiny-model" }
  corpus c { paths = ["docs/*.txt"]  min_chars = 5  split = { by = line, length = 1, overlap = 0 } }
  rag local { corpus = corpus.c  retriever = bm25  top_k = 1 }
  rag wide { corpus = corpus.c  retriever = bm25  top_k = 2 }
  eval expert { data = "eval.jsonl"  systems = [rag.local, rag.wide]  metrics = [exact_match, recall_at_k]
                gate = rag.local.recall_at_k >= 0 }
  route { examples = "route.jsonl"  domain = rag.local  holdout = 0.34 }
}
'''
DOMAIN_Q = ("How does SIP INVITE work?", "What does the HSS store?", "How does BYE end a SIP call?",
            "Which SIP request starts a call?", "What is the S-CSCF?", "SIP call setup")
GENERAL_Q = ("Best pasta recipe?", "How do I fix a bike?", "Capital of Peru?", "Recommend a novel",
             "Why is the sky blue?", "How to learn swimming")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of(url: "str | urllib.request.Request") -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def start_ui(recipe: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "ui", str(recipe), "--port", str(port), *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dsl ui exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            status_of(base + "/static/ui.css")
            return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("dsl ui never answered")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bare_model(folder: Path) -> None:
    """A tiny random Llama for the playground's bare model (no retrieval). Its output layer is untied from the
    embeddings and random: tied, a random model repeats its prompt's last token, a newline, so its answer (the
    first line) would be empty."""
    import torch

    from tests._tiny import make_tiny_model

    make_tiny_model(folder)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    model.config.tie_word_embeddings = False
    weights = torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
    model.lm_head.weight = torch.nn.Parameter(weights)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The recipe applied twice (rag.local's top_k 1, then 2): two runs, two versions of the eval."""
    import sdk
    from sdk import events as EV
    from sdk.loaders import load

    tmp = tmp_path_factory.mktemp("ui")
    bare_model(tmp / "tiny-model")
    (tmp / "docs").mkdir()
    (tmp / "docs" / "sip.txt").write_text("An INVITE request starts a SIP call.\nBYE ends a SIP call.\n")
    (tmp / "docs" / "ims.txt").write_text("The HSS stores subscribers.\nThe S-CSCF handles SIP registration.\n")
    rows = [{"text": t, "target": "domain"} for t in DOMAIN_Q] + [{"text": t, "target": "general"} for t in GENERAL_Q]
    (tmp / "route.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = [("q1", "Which request starts a SIP call?", "INVITE", "sip"), ("q2", "What ends a SIP call?", "BYE", "sip"),
             ("q3", "What stores subscribers?", "The HSS", "ims"),
             ("q4", "What handles SIP registration?", "The S-CSCF", "ims")]
    (tmp / "eval.jsonl").write_text("".join(json.dumps({"id": i, "question": q, "answer": a, "sources": [f"docs/{f}.txt"]})
                                            + "\n" for i, q, a, f in items))
    recipe = tmp / "r.dsl"
    recipe.write_text(RECIPE)
    first = sdk.apply(load(recipe))
    assert first.ok, [o.error for o in first.failed]
    recipe.write_text(RECIPE.replace("top_k = 1", "top_k = 2", 1))
    second = sdk.apply(load(recipe))
    assert second.ok, [o.error for o in second.failed]
    workdir = tmp / ".dsl" / "ui"
    runs = EV.list_runs(workdir)
    assert len(runs) == 2
    return {"dir": tmp, "recipe": recipe, "workdir": workdir, "runs": [r["run_id"] for r in runs]}


@pytest.fixture(scope="module")
def ui(applied: dict[str, Any]) -> Iterator[str]:
    proc, base = start_ui(applied["recipe"])
    yield base
    stop(proc)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("DSL_UI_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def console_errors(driver: Any, allow: str = "") -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not (allow and allow in e["message"])]


@contextmanager
def page(driver: Any, shots: Path, name: str, url: str | None = None, allow: str = "") -> Iterator[Any]:
    """Open ``url``, run the checks inside the block, then take the screenshot ``name.png`` and check the console;
    a failure inside writes ``FAILED-name.png`` first."""
    if url:
        driver.get(url)
    try:
        yield driver
        assert console_errors(driver, allow) == [], name
    except BaseException:
        driver.save_screenshot(str(shots / f"FAILED-{name}.png"))
        raise
    driver.save_screenshot(str(shots / f"{name}.png"))


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a live page swaps its parts (htmx): an element found a moment ago may be gone; look again at the next poll
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(lambda d: condition(d))


def by_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


# ---------------------------------------------------------------------------------------------------- pages


def test_plan_page_shows_each_step_state_reason_inputs_and_artifact(ui: str, applied: dict[str, Any], browser: Any,
                                                                      shots: Path) -> None:
    from sdk.loaders import load
    from sdk.planner import plan
    from sdk.state import StateStore

    state = StateStore(applied["workdir"]).load()
    with page(browser, shots, "plan", f"{ui}/plan") as d:
        rows = {r.get_attribute("data-step"): r for r in by_css(d, "#plan-table tr[data-step]")}
        assert sorted(rows) == sorted(state.steps)
        for sid, row in rows.items():
            assert row.find_element("css selector", ".state").text == "up to date", sid
            assert state.steps[sid]["artifact"] in row.text
        assert "rag.local" in rows["eval.expert"].text and "corpus.c" in rows["rag.local"].text  # inputs
        assert len(by_css(d, "svg.graph g.node")) == len(state.steps)
        assert not by_css(d, "#no-state")
    recipe = applied["recipe"]
    original = recipe.read_text()
    recipe.write_text(original.replace("top_k = 2 }\n  eval", "top_k = 3 }\n  eval"))  # rag.wide changes
    try:
        expected = plan(load(recipe), state, skip_checks=True)
        with page(browser, shots, "plan-changed", f"{ui}/plan") as d:
            row = by_css(d, '#plan-table tr[data-step="rag.wide"]')[0]
            assert row.find_element("css selector", ".state").text == "to replace"
            assert expected.step("rag.wide").reason in row.text and "top_k" in row.text
            assert by_css(d, '#plan-table tr[data-step="corpus.c"] .state')[0].text == "up to date"
    finally:
        recipe.write_text(original)
    with page(browser, shots, "step", f"{ui}/plan/rag.local") as d:
        assert d.find_element("id", "step-artifact").text == state.steps["rag.local"]["artifact"]
        assert d.find_element("id", "step-state").text == "up to date"
        assert '"top_k": 2' in d.page_source


def test_runs_page_lists_the_event_log_and_compares_two_runs(ui: str, applied: dict[str, Any], browser: Any,
                                                            shots: Path) -> None:
    newer, older = applied["runs"]
    with page(browser, shots, "runs", f"{ui}/runs") as d:
        rows = by_css(d, "tr.run")
        assert [r.get_attribute("data-run") for r in rows] == [newer, older]
        assert all(r.find_element("css selector", ".status").text == "succeeded" for r in rows)
        d.find_element("css selector", f'tr[data-run="{older}"] input[name="a"]').click()
        d.find_element("css selector", f'tr[data-run="{newer}"] input[name="b"]').click()
        d.find_element("id", "compare-button").click()
        wait_for(d, lambda d: "/compare" in d.current_url)
    with page(browser, shots, "compare") as d:
        rag = by_css(d, '#compare-table tr[data-step="rag.local"]')[0]
        # the configuration diff itself, from each run's record, though the older run's artifact was replaced
        assert rag.find_element("css selector", ".changes").text == "top_k: 1 -> 2"
        ev = by_css(d, '#compare-table tr[data-step="eval.expert"]')[0]
        names = [m.find_elements("css selector", "td")[0].text for m in ev.find_elements("css selector", "tr.metric")]
        assert "rag.local/recall_at_k" in names
    with page(browser, shots, "run", f"{ui}/runs/{older}") as d:
        assert d.find_element("id", "run-status").text == "succeeded"
        steps = {r.get_attribute("data-step"): r.find_element("css selector", ".status").text
                 for r in by_css(d, "#run-steps tr[data-step]")}
        assert steps["rag.local"] == "done" and steps["eval.expert"] == "done"


def test_a_past_run_whose_event_log_is_gone_is_drawn_from_mlflow(ui: str, applied: dict[str, Any], browser: Any,
                                                                 shots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A past run read back from the MLflow store (sdk.tracking_store) when its event log is gone: a copy of the older
    run's log with a training curve added is recorded in the workdir's own store by sdk.tracking, as an apply
    would record it, then the log is deleted; the run's page draws its steps and curve from MLflow's record."""
    import shutil

    from sdk import events as EV
    from sdk import tracking
    from sdk.loaders import load
    from sdk.state import StateStore

    workdir, run_id = applied["workdir"], "20000101T000000-5eed"  # sorts last: the runs table keeps its order
    log = EV.log_path(workdir, run_id)
    log.write_text(EV.log_path(workdir, applied["runs"][1]).read_text())
    curve = [[k, 3.0 - 0.25 * k] for k in range(1, 9)]
    for k, v in curve:
        EV.append_event(log, run_id, "metric", "rag.local", {"name": "train_loss", "value": v, "step": k})
    ran = [e["step"] for e in EV.read_events(workdir, run_id)[0] if e["event"] == "step_finished"]
    monkeypatch.setenv("DSL_TRACKING", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    warnings: list[str] = []
    try:
        recorded = tracking.record_run(load(applied["recipe"]), workdir, run_id, state=StateStore(workdir).load(),
                                       warn=warnings.append)
        assert recorded and not warnings, warnings
        log.unlink()
        with page(browser, shots, "runs-tracked", f"{ui}/runs") as d:  # listed apart from the event logs' runs
            row = wait_for(d, lambda d: by_css(d, f'#tracked-runs tr.tracked-run[data-run="{run_id}"]'))[0]
            assert row.find_element("css selector", ".status").text == "succeeded"
            assert [r.get_attribute("data-run") for r in by_css(d, "tr.run")] == applied["runs"]
        row.find_element("css selector", "a").click()
        wait_for(browser, lambda d: d.current_url.endswith(f"/runs/{run_id}"))
        with page(browser, shots, "run-from-mlflow") as d:
            assert d.find_element("id", "run-record").get_attribute("data-record") == "mlflow"
            source = d.find_element("id", "curves-source")
            assert source.get_attribute("data-source") == "mlflow" and recorded in source.text
            assert "Curves from the tracking store" in source.text
            assert d.find_element("id", "run-status").text == "succeeded"
            steps = {r.get_attribute("data-step"): r.find_element("css selector", ".status").text
                     for r in by_css(d, "#run-steps tr[data-step]")}
            assert sorted(steps) == sorted(ran) and set(steps.values()) == {"done"}
            assert len(by_css(d, 'polyline.curve[data-name="train_loss"]')) == 1
            assert f"train_loss = {curve[-1][1]:.4f}" in d.page_source
    finally:
        log.unlink(missing_ok=True)
        shutil.rmtree(workdir / tracking.LOCAL_STORE, ignore_errors=True)  # the other pages read no store
    assert status_of(f"{ui}/runs/{run_id}") == 404  # gone from both: a 404 page


def test_reports_page_matches_the_eval_summary_and_filters_items(ui: str, applied: dict[str, Any], browser: Any,
                                                                 shots: Path) -> None:
    from sdk.state import StateStore

    state = StateStore(applied["workdir"]).load()
    folder = applied["workdir"] / state.steps["eval.expert"]["artifact"]
    summary = json.loads((folder / "summary.json").read_text())
    predictions = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
    with page(browser, shots, "report", f"{ui}/reports/eval.expert") as d:
        for system, metrics in summary["metrics"].items():
            row = by_css(d, f'#metrics-table tr[data-system="{system}"]')[0]
            for m in metrics.values():
                assert f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" in row.text
        assert "passed" in d.find_element("id", "gate").text
        assert len(by_css(d, "svg.chart rect.bar")) == sum(len(m) for m in summary["metrics"].values())
        rows = by_css(d, "#items-table tr.item")
        assert len(rows) == len(predictions)
        first = rows[0]
        wrong = [p for p in predictions if p["system"] == "rag.local" and p["correct"] < 1]
        if wrong:  # the promoted system's wrong answers come first
            assert first.get_attribute("data-system") == "rag.local" and "wrong" in first.get_attribute("class")
        d.find_element("id", "q").send_keys("subscribers")
        wait_for(d, lambda d: len(by_css(d, "#items-table tr.item")) == 2)
        assert {r.get_attribute("data-item") for r in by_css(d, "#items-table tr.item")} == {"q3"}
    with page(browser, shots, "item", f"{ui}/reports/eval.expert/items/q3") as d:
        columns = by_css(d, "#item-columns .version")
        from sdk import events as EV

        made = {e["data"]["fingerprint"] for r in applied["runs"] for e in EV.read_events(applied["workdir"], r)[0]
                if e["event"] == "step_finished" and e["step"] == "eval.expert"}
        assert len(made) == 2 and not all((folder.parent / fp).is_dir() for fp in made)  # the older one was replaced
        # both runs' answers side by side all the same: the older run kept a copy of its answers
        assert {c.get_attribute("data-fingerprint") for c in columns} == made
        assert d.find_element("id", "item-question").text == "What stores subscribers?"
    with page(browser, shots, "html-report", f"{ui}/reports/eval.expert/html") as d:
        images = by_css(d, "img")
        assert images and all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
                              for i in images)
    with page(browser, shots, "html-report-file", (folder / "report.html").as_uri()) as d:
        assert all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in by_css(d, "img"))


def test_playground_asks_a_system_and_auto_through_the_router(ui: str, applied: dict[str, Any], browser: Any,
                                                             shots: Path) -> None:
    from selenium.webdriver.support.ui import Select

    from sdk.backends.routing.router import Router
    from sdk.state import StateStore

    state = StateStore(applied["workdir"]).load()
    with page(browser, shots, "playground", f"{ui}/playground") as d:
        options = [o.get_attribute("value") for o in by_css(d, "#system option")]
        assert options == ["auto", "base_model.tiny", "rag.local", "rag.wide"]
        Select(d.find_element("id", "system")).select_by_value("rag.wide")
        d.find_element("id", "question").send_keys("What stores subscribers?")
        d.find_element("id", "ask-button").click()
        wait_for(d, lambda d: by_css(d, "#answered"))
        assert d.find_element("id", "answered").get_attribute("data-system") == "rag.wide"
        sources = by_css(d, "#sources li")
        assert sources and "HSS stores subscribers" in sources[0].text
    question = "Which SIP request starts a call?"
    decision = Router.load(applied["workdir"] / state.steps["route.default"]["artifact"]).route(question)
    with page(browser, shots, "playground-auto", f"{ui}/playground") as d:
        d.find_element("id", "question").send_keys(question)
        d.find_element("id", "ask-button").click()
        wait_for(d, lambda d: by_css(d, "#routing"))
        routing = d.find_element("id", "routing").text
        assert decision["target"] in routing and decision["system"] in routing
        assert d.find_element("id", "probability").text == f"{decision['probability']:.3f}"
    with page(browser, shots, "playground-model", f"{ui}/playground") as d:  # a bare model: no retrieval, no sources
        Select(d.find_element("id", "system")).select_by_value("base_model.tiny")
        d.find_element("id", "question").send_keys("What does the HSS store?")
        d.find_element("id", "ask-button").click()
        wait_for(d, lambda d: by_css(d, "#answered") or by_css(d, "#ask-error"), timeout=180)  # loads torch once
        assert not by_css(d, "#ask-error"), d.find_element("id", "ask-error").text
        assert d.find_element("id", "answered").get_attribute("data-system") == "base_model.tiny"
        assert not by_css(d, "#sources, #routing")
        shown = d.find_element("id", "answer-text").text
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdk.backends.eval.clients import LocalModel
    from sdk.ui.playground import MAX_NEW_TOKENS

    folder = applied["dir"] / "tiny-model"
    model = LocalModel(model=AutoModelForCausalLM.from_pretrained(folder), tokenizer=AutoTokenizer.from_pretrained(folder))
    expected = model.generate("What does the HSS store?", MAX_NEW_TOKENS)
    letters = lambda text: "".join(ch for ch in text if ch.isalnum())  # noqa: E731 - the page drops control bytes
    assert letters(expected) and letters(shown) == letters(expected), (shown, expected)


NOT_FOUND = ["/plan/rag.nope", "/runs/20990101T000000-abcd", "/runs/not-a-run", "/reports/eval.nope",
             "/reports/eval.expert/items/q99", "/compare?a=20990101T000000-abcd&b=20990101T000000-abce", "/nowhere"]


def test_unknown_ids_are_404_pages(ui: str, browser: Any, shots: Path) -> None:
    for path in NOT_FOUND:
        assert status_of(ui + path) == 404, path
    with page(browser, shots, "not-found", f"{ui}/plan/rag.nope", allow="status of 404") as d:
        assert d.find_element("id", "error-title").text == "Not found"
        assert "no step 'rag.nope'" in d.find_element("id", "error-message").text


def test_port_in_use_and_a_public_address_without_token_exit_1(ui: str, applied: dict[str, Any]) -> None:
    from tests.conftest import run_dsl

    port = ui.rsplit(":", 1)[1]
    r = run_dsl("ui", str(applied["recipe"]), "--port", port, timeout=60)
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr and "Traceback" not in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "DSL_UI_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "dsl.cli", "ui", str(applied["recipe"]), "--host", "0.0.0.0",
                        "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "needs a token" in r.stderr and "DSL_UI_TOKEN" in r.stderr
    # on loopback without a token, a request addressed to another name (a site rebinding its DNS to 127.0.0.1)
    # is refused; the loopback names are served
    assert status_of(urllib.request.Request(f"{ui}/plan", headers={"Host": f"rebound.example:{port}"})) == 403
    assert status_of(urllib.request.Request(f"{ui}/plan", headers={"Host": f"localhost:{port}"})) == 200


def test_the_token_guards_every_page(applied: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from sdk.ui.app import create_app

    monkeypatch.setenv("DSL_UI_TOKEN", "s3cret-token")
    client = TestClient(create_app(applied["recipe"]))
    assert client.get("/plan").status_code == 401
    assert client.get("/plan", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/plan", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    first = client.get("/runs?token=s3cret-token", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/runs"
    assert client.get("/runs").status_code == 200  # the cookie the first visit set
    slash = client.get("/reports/eval.expert/items/a/b%3Fc")  # an item id with "/" and "?" reaches the item view
    assert slash.status_code == 404 and "no item &#39;a/b?c&#39;" in slash.text, slash.text[-600:]


def test_no_state_says_what_to_run_and_an_apply_is_followed_live(tmp_path: Path, browser: Any, shots: Path) -> None:
    from sdk import events as EV

    recipe = write_small(tmp_path)
    workdir = tmp_path / ".dsl" / "demo"
    proc, base = start_ui(recipe)
    try:
        for name, css in (("plan", "#no-state"), ("runs", "#no-runs"), ("reports", "#no-reports"),
                          ("playground", "#no-systems")):
            with page(browser, shots, f"empty-{name}", f"{base}/{name}") as d:
                assert f"dsl apply {recipe}" in by_css(d, css)[0].text, name
        script = (f"import sdk; from sdk.loaders import load; "
                  f"sdk.apply(load({str(recipe)!r}), backend='test', options={{'test_sleep': 0.8}})")
        apply = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 60
            while not EV.list_runs(workdir) and time.time() < deadline:
                time.sleep(0.1)
            run_id = EV.list_runs(workdir)[0]["run_id"]
            with page(browser, shots, "live", f"{base}/runs/{run_id}") as d:
                assert d.find_element("id", "run-status").text == "running"
                log = EV.job_logger(json.dumps({"path": str(EV.log_path(workdir, run_id)), "run": run_id,
                                                "step": "pretrain.base"}))
                assert log is not None
                for i in range(1, 6):  # what a trainer logs through DSL_EVENTS
                    log("train_loss", 5.0 - i * 0.5, i)
                    log("eval_loss", 5.2 - i * 0.4, i)
                wait_for(d, lambda d: len(by_css(d, 'polyline.curve[data-name="eval_loss"]')) == 1)
                # a live run's curves come from its event log (MLflow records the run when the apply ends)
                assert d.find_element("id", "curves-source").get_attribute("data-source") == "events"
                d.save_screenshot(str(shots / "live-running.png"))  # docs/img/ui-run-live.png
                wait_for(d, lambda d: d.find_element("id", "run-status").text == "succeeded", timeout=90)
                statuses = [r.text for r in by_css(d, "#run-steps td.status")]
                assert statuses and all(s == "done" for s in statuses), statuses
                assert "train_loss = 2.5000" in d.page_source
                assert "there is no tracking store" in d.find_element("id", "curves-source").text  # tracking is off
        finally:
            apply.wait(timeout=120)
        assert apply.returncode == 0, apply.stdout.read() if apply.stdout else ""
    finally:
        stop(proc)
