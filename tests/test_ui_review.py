"""The Review view of `dsl ui` in a real browser (the Chromium, Selenium and chromium-driver fixtures of
tests/test_ui.py), over a hand-made applied synth step (tests/_review_data.py): rows beside their source chunks,
reject with a reason, edit, one edit applied to every row a search matches, status filters, counts, the reviewer
remembered; each action checked against the decisions log it wrote. And the writes' guards: token, another site's
Origin, a POST not made by the page's htmx."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from sdk import reviews as RV
from tests._review_data import applied_synth
from tests.test_ui import browser, by_css, page, shots, start_ui, stop, wait_for  # noqa: F401, F811 (fixtures)
from tests.test_ui import pytestmark as _browser_mark

pytestmark = _browser_mark


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return applied_synth(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def ui(synth: dict[str, Any]) -> Iterator[str]:
    proc, base = start_ui(synth["recipe"])
    yield base
    stop(proc)


def row_el(d: Any, rid: str) -> Any:
    return by_css(d, f'.review-row[data-id="{rid}"]')[0]


def status_of_row(d: Any, rid: str) -> str:
    found = d.execute_script(f'const e = document.querySelector(\'.review-row[data-id="{rid}"]\'); '
                             'return e ? e.dataset.status : "";')  # no stale element while htmx swaps the row
    return str(found)


def shown_ids(d: Any) -> list[str]:
    return list(d.execute_script("return [...document.querySelectorAll('.review-row')].map(e => e.dataset.id);"))


def count(d: Any, status: str) -> int:
    return int(by_css(d, f'#review-counts .count[data-status="{status}"] strong')[0].text)


def test_an_expert_rejects_edits_and_bulk_edits_rows_beside_their_chunks(ui: str, synth: dict[str, Any], browser: Any,  # noqa: F811
                                                                         shots: Path) -> None:  # noqa: F811
    from selenium.webdriver.support.ui import Select

    rows, ids = synth["rows"], [r["id"] for r in synth["rows"]]
    with page(browser, shots, "review-list", f"{ui}/review") as d:
        line = by_css(d, '#review-steps tr[data-step="synth.ops"]')[0]
        assert line.find_element("css selector", ".pending").text == "5"
        line.find_element("css selector", "a").click()
        wait_for(d, lambda d: d.current_url.endswith("/review/ops"))
    with page(browser, shots, "review") as d:
        assert shown_ids(d) == ids
        first = row_el(d, ids[0])
        assert first.find_element("css selector", ".chunk").text == rows[0]["chunk"]  # the source chunk beside it
        assert first.find_element("css selector", ".source").text == rows[0]["source"]
        d.find_element("id", "reviewer").send_keys("ana")
        first.find_element("css selector", "input.reason").send_keys("not what the chunk says")
        first.find_element("css selector", "button.reject").click()
        wait_for(d, lambda d: status_of_row(d, ids[0]) == "rejected")
        assert count(d, "rejected") == 1 and count(d, "pending") == 4
        second = row_el(d, ids[1])
        answer = second.find_element("css selector", "textarea.field-answer")
        answer.clear()
        answer.send_keys("BYE.")
        second.find_element("css selector", "button.edit").click()
        wait_for(d, lambda d: status_of_row(d, ids[1]) == "edited")
        assert row_el(d, ids[1]).find_element("css selector", ".was").text == rows[1]["answer"]
        assert count(d, "edited") == 1
    got = RV.load(synth["decisions"])
    assert got[ids[0]]["decision"] == "reject" and got[ids[0]]["reason"] == "not what the chunk says"
    assert got[ids[0]]["reviewer"] == "ana" and got[ids[0]]["at"].endswith("Z")
    assert got[ids[1]]["fields"] == {"answer": "BYE."}
    matches = RV.matching(rows, got, "CSCF")
    with page(browser, shots, "review-bulk", f"{ui}/review/ops") as d:
        assert d.find_element("id", "reviewer").get_attribute("value") == "ana"  # remembered
        assert not d.find_element("id", "bulk-button").is_enabled()  # no search yet
        d.find_element("id", "replacement").send_keys("Call Session Control Function")
        d.find_element("id", "bulk-reason").send_keys("spell it out")
        d.find_element("id", "q").send_keys("CSCF")
        wait_for(d, lambda d: d.execute_script("return document.getElementById('bulk-button').textContent")
                 == "Apply this edit to all 2 matching rows")
        assert len(shown_ids(d)) == len(matches) == 2
        d.find_element("id", "bulk-button").click()
        wait_for(d, lambda d: by_css(d, "#review-message"))
        assert d.find_element("id", "review-message").text == "edited 2 of 2 matching rows"
    got = RV.load(synth["decisions"])
    edited = [got[r["id"]] for r in matches]
    assert all(e["decision"] == "edit" and e["reason"] == "spell it out" for e in edited)
    assert edited[0]["fields"]["answer"] == "The S-Call Session Control Function handles SIP registration."
    with page(browser, shots, "review-filter", f"{ui}/review/ops") as d:
        Select(d.find_element("id", "status-filter")).select_by_value("rejected")
        wait_for(d, lambda d: shown_ids(d) == [ids[0]])
        assert d.find_element("id", "rows-count").text == "1 of 5 rows"
        assert count(d, "edited") == 3 and count(d, "pending") == 1
    kept, dropped = RV.apply(rows, RV.load(synth["decisions"]), "required")
    assert [r["id"] for r in kept] == [ids[1], ids[3], ids[4]] and len(dropped) == 2


def test_review_writes_need_the_page_itself(synth: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from sdk.ui.app import create_app

    rid = synth["rows"][2]["id"]
    form = {"id": rid, "decision": "accept", "reviewer": "mallory"}
    client = TestClient(create_app(synth["recipe"]))
    assert client.post("/review/ops/decide", data=form).status_code == 403  # not htmx: a plain cross-site form
    hx = {"HX-Request": "true"}
    assert client.post("/review/ops/decide", data=form, headers={**hx, "Origin": "http://evil.example"}).status_code == 403
    assert client.post("/review/ops/decide", data=form, headers={**hx, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/review/ops/decide", data={**form, "id": "nope"}, headers=hx).status_code == 404
    assert client.get("/review/nope").status_code == 404
    monkeypatch.setenv("DSL_UI_TOKEN", "s3cret-token")
    guarded = TestClient(create_app(synth["recipe"]))
    assert guarded.post("/review/ops/decide", data=form, headers=hx).status_code == 401
    assert all(e["reviewer"] != "mallory" for e in RV.history(synth["decisions"]))
    ok = guarded.post("/review/ops/decide", data=form, headers={**hx, "Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and RV.load(synth["decisions"])[rid]["reviewer"] == "mallory"
    assert "dsl_reviewer=mallory" in ok.headers["set-cookie"]
