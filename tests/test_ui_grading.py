"""The Grade view of `dsl ui` in a real browser (the Chromium, Selenium and chromium-driver fixtures of
tests/test_ui.py), over an eval applied against a scripted OpenAI-compatible server: an expert grades two items
blind (no system id anywhere in the page), each grade checked in the grades file it wrote, with the system kept
there; the answer order stays put for a grader; a POST not made by the page's htmx is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdk import grades as G
from tests._openai_server import OpenAIServer, chat_completion
from tests.test_grades import ITEMS, _recipe
from tests.test_ui import browser, by_css, page, shots, start_ui, stop, wait_for  # noqa: F401 (fixtures)
from tests.test_ui import pytestmark as _browser_mark

pytestmark = _browser_mark


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import sdk
    from dsl.parser import load

    answers = {q: a for _, q, a in ITEMS}

    def handler(body: dict[str, Any], request: Any) -> Any:
        text = body["messages"][-1]["content"]
        if body["model"] == "judge":
            return chat_completion("3", model="judge")
        q = next(q for q in answers if q in text)
        return chat_completion(answers[q] if body["model"] == "good" else "I do not know", model=body["model"])

    folder = tmp_path_factory.mktemp("grading")
    with OpenAIServer(handler) as server:
        path = _recipe(folder, server.port, "    human = { mode = pass_fail }")
        result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    return path


@pytest.fixture(scope="module")
def ui(applied: Path) -> Iterator[str]:
    proc, base = start_ui(applied)
    yield base
    stop(proc)


def _answers(d: Any, item: str) -> list[str]:
    return [e.get_attribute("data-answer") for e in by_css(d, f'.grade-item[data-item="{item}"] .blind-answer')]


def _graded(d: Any, item: str) -> bool:
    return bool(d.execute_script(f'const e = document.querySelector(\'.grade-item[data-item="{item}"]\'); '
                                 'return e && e.dataset.graded === "yes";'))


def test_an_expert_grades_two_items_blind(ui: str, applied: Path, browser: Any, shots: Path) -> None:
    from selenium.webdriver.support.ui import Select

    with page(browser, shots, "grade-list", f"{ui}/grade") as d:
        by_css(d, '#grade-evals tr[data-eval="eval.mc"] a')[0].click()
        wait_for(d, lambda d: d.current_url.endswith("/grade/mc"))
    with page(browser, shots, "grade") as d:
        for system in ("rag.a", "rag.b", "endpoint:"):
            assert system not in d.page_source  # blind: no system is named anywhere in the page
        assert by_css(d, "#grade-progress .done")[0].text == "0" and by_css(d, "#grade-progress .total")[0].text == "4"
        assert "Reference: INVITE" in by_css(d, '.grade-item[data-item="q1"] .reference')[0].text
        d.find_element("id", "grader").send_keys("ann")
        for item, right in (("q1", "INVITE"), ("q2", "BYE")):
            for form in by_css(d, f'.grade-item[data-item="{item}"] .blind-answer'):
                if form.find_element("css selector", ".text").text == right:
                    form.find_element("css selector", "button.pass").click()
                    css = f'.grade-item[data-item="{item}"] .blind-answer[data-answer="{G.answer_hash(right)}"]'
                    wait_for(d, lambda d, css=css: "pass" in by_css(d, css)[0].get_attribute("class"))
                    break
            wrong = G.answer_hash("I do not know")
            form = by_css(d, f'.grade-item[data-item="{item}"] .blind-answer[data-answer="{wrong}"]')[0]
            Select(form.find_element("css selector", "select.category")).select_by_value("incomplete")
            form.find_element("css selector", "button.fail").click()
            wait_for(d, lambda d, item=item: _graded(d, item))
        wait_for(d, lambda d: by_css(d, "#grade-progress .done")[0].text == "2")
        order = _answers(d, "q1")
        assert "rag.a" not in d.page_source and "rag.b" not in d.page_source
    with page(browser, shots, "grade-again", f"{ui}/grade/mc") as d:
        assert _answers(d, "q1") == order  # the same order for the same grader
        assert d.find_element("id", "grader").get_attribute("value") == "ann"  # remembered
        assert by_css(d, "#grade-progress .done")[0].text == "2"
    got = G.load(G.grades_path(applied, "t", "mc"))
    assert len(got) == 4 and {g["grader"] for g in got} == {"ann"}
    by_answer = {(g["item"], g["answer"]): g for g in got}
    right = by_answer[("q1", G.answer_hash("INVITE"))]
    assert right["verdict"] == "pass" and right["system"] == "rag.a"
    wrong = by_answer[("q2", G.answer_hash("I do not know"))]
    assert wrong["verdict"] == "fail" and wrong["category"] == "incomplete" and wrong["system"] == "rag.b"


def test_a_grade_not_posted_by_the_page_is_refused(ui: str, applied: Path) -> None:
    import httpx

    before = len(G.load(G.grades_path(applied, "t", "mc")))
    r = httpx.post(f"{ui}/grade/mc/grade", data={"item": "q3", "answer": G.answer_hash("RTP"), "verdict": "pass",
                                                 "grader": "mallory"})
    assert r.status_code == 403 and "refused" in r.text
    r = httpx.post(f"{ui}/grade/mc/grade", headers={"HX-Request": "true"},
                   data={"item": "q3", "answer": "0" * 16, "verdict": "pass", "grader": "eve"})
    assert r.status_code == 200 and "has no such answer" in r.text
    assert len(G.load(G.grades_path(applied, "t", "mc"))) == before


def test_pairwise_grading_shows_pairs_blind_and_records_the_preference(ui: str, applied: Path) -> None:
    import httpx

    text = applied.read_text()
    applied.write_text(text.replace("human = { mode = pass_fail }", "human = { mode = pairwise }"))
    try:
        r = httpx.get(f"{ui}/grade/mc", cookies={"dsl_grader": "bob"})
        assert r.status_code == 200 and r.text.count('class="blind-pair"') == 4  # one pair per item
        assert "rag.a" not in r.text and "rag.b" not in r.text and "Answer A" in r.text
        good, bad = G.answer_hash("RTP"), G.answer_hash("I do not know")
        r = httpx.post(f"{ui}/grade/mc/grade", headers={"HX-Request": "true"}, cookies={"dsl_grader": "bob"},
                       data={"item": "q3", "a": bad, "b": good, "prefer": good})
        assert r.status_code == 200 and "you preferred" in r.text and "grade-error" not in r.text
    finally:
        applied.write_text(text)
    last = G.load(G.grades_path(applied, "t", "mc"))[-1]
    assert last["grader"] == "bob" and last["prefer"] == good and sorted(last["answers"]) == last["answers"]
