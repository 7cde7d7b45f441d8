"""Attacks by hostile peers (issue 24, second round), split from tests/test_hostile_more.py: an upstream that answers
400 MB, redirects to another host or asks to retry in three years; gateway requests with n = 1000, deep JSON or
malformed content parts, and a client that stops reading its answer; `dsl ui` uploads, path tricks, forged posts,
cross-site loads and an edited report. Each is a 4xx or a bounded wait, never a traceback, a hang, a leaked key or
a write outside the folders dsl owns."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests._openai_server import OpenAIServer, chat_completion
from tests._specs import write_small
from tests.test_hostile_more import DEEP, HUGE_INT

# --------------------------------------------------------------------------------------------- hostile upstreams

@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

    calls: dict[str, int] = {}
    elsewhere: list[dict[str, str]] = []

    def handler(body: dict[str, Any], request: Any) -> Any:
        model = body["model"]
        calls[model] = calls.get(model, 0) + 1
        if model == "redirect":
            return RedirectResponse(f"http://localhost:{other.port}/v1/chat/completions", status_code=307)
        if model == "huge":  # 400 MB of answer, sent as fast as loopback allows
            head = b'{"id":"x","object":"chat.completion","created":0,"model":"huge","choices":[{"index":0,' \
                   b'"message":{"role":"assistant","content":"'
            return StreamingResponse(iter([head] + [b"a" * (1 << 20)] * 400 + [b'"}}]}']),
                                     media_type="application/json")
        if model == "big":  # 20 MB: under the answer limit, for a client that never reads it
            return chat_completion("a" * 20_000_000, model=model)
        if model == "later":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"retry-after": "100000000"})
        return chat_completion("fine", model=model)

    other = OpenAIServer(lambda body, request: (elsewhere.append(dict(request.headers)), chat_completion("stolen"))[1])
    up = OpenAIServer(handler)
    yield {"url": f"http://127.0.0.1:{up.port}/v1", "calls": calls, "elsewhere": elsewhere}
    up.stop()
    other.stop()


def _ask(upstreams: dict[str, Any], model: str, retries: int = 2) -> Any:
    from sdk.upstream import Target, chat

    return chat(Target(upstreams["url"], model, "HOSTILE_KEY", timeout=20, max_retries=retries),
                [{"role": "user", "content": "q"}], 8)


def test_an_answer_larger_than_the_limit_is_cut_off_and_not_retried(upstreams: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.upstream import UpstreamError

    monkeypatch.setenv("DSL_MAX_ANSWER_BYTES", "1000000")
    with pytest.raises(UpstreamError, match=r"the upstream's answer is larger than 1,000,000 bytes"):
        _ask(upstreams, "huge")
    assert upstreams["calls"]["huge"] == 1  # it would send as much again


def test_a_redirect_is_never_followed_and_the_key_never_leaves(upstreams: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.upstream import UpstreamError

    monkeypatch.setenv("HOSTILE_KEY", "sk-never-elsewhere-4242")
    with pytest.raises(UpstreamError, match=r"307, a redirect, which is never followed") as e:
        _ask(upstreams, "redirect")
    assert upstreams["elsewhere"] == [] and "sk-never" not in str(e.value)


def test_a_retry_after_beyond_the_deadline_fails_at_once_instead_of_waiting(upstreams: dict[str, Any]) -> None:
    from sdk.upstream import UpstreamError

    with pytest.raises(UpstreamError, match=r"429 \(slow down\)"):
        _ask(upstreams, "later", retries=3)
    assert upstreams["calls"]["later"] == 1


# ------------------------------------------------------------------------------------------------- the gateway

@pytest.fixture(scope="module")
def gateway_url(upstreams: dict[str, Any]) -> Iterator[str]:
    import uvicorn

    from sdk.serving.asgi import server_config
    from sdk.serving.gateway import Gateway, create_app

    config = {"domain": "d", "max_request_bytes": 1_000_000, "variants": {
        "finetune.x": {"type": "endpoint", "url": upstreams["url"], "model": "m", "timeout": 5, "max_retries": 0},
        "finetune.big": {"type": "endpoint", "url": upstreams["url"], "model": "big", "timeout": 20, "max_retries": 0}}}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(Gateway(config, preload=False)), "127.0.0.1", port, 2.0,
                                          log_level="error", body_timeout=2.0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


MSG = '"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize("body,param,says", [
    ('{"model": "finetune.x", ' + MSG + ', "n": 1000}', "n", "one choice per request"),
    ('{"model": "finetune.x", "prompt": "a", "n": 3}', "n", "one choice per request"),
    ('{"model": "finetune.x", "messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]}',
     "messages.0.content", "must be a string"),
    ('{"model": "finetune.x", ' + MSG + ', "x": ' + DEEP + "}", None, "error parsing the body"),
    ('{"model": "finetune.x", ' + MSG + ', "max_tokens": ' + HUGE_INT + "}", None, "error parsing the body"),
])
def test_hostile_requests_are_4xx_in_openai_shape(gateway_url: str, body: str, param: str, says: str) -> None:
    path = "/v1/completions" if '"prompt"' in body else "/v1/chat/completions"
    r = httpx.post(gateway_url + path, content=body.encode(), headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"] and "Value error" not in err["message"], err
    assert httpx.post(gateway_url + "/v1/chat/completions", json={"model": "finetune.x", "n": 1,
                      "messages": [{"role": "user", "content": "hi"}]}, timeout=30).status_code == 200


# ------------------------------------------------------------------------------------------------------ dsl ui

@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from starlette.testclient import TestClient

    from sdk.ui.app import create_app

    folder = tmp_path_factory.mktemp("ui") / "recipe"
    folder.mkdir()
    recipe = write_small(folder)
    with TestClient(create_app(recipe), base_url="http://127.0.0.1:8765") as client:
        yield client, folder


def test_a_huge_upload_to_the_ui_is_413_before_it_is_read(ui: tuple[Any, Path]) -> None:
    client, _ = ui
    big = b"question=" + b"a" * (5 * 1024 * 1024)
    r = client.post("/playground/ask", content=big, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413, r.text[:200]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(6):
            yield b"a" * (1024 * 1024)

    r = client.post("/review/gen/decide", content=chunks(), headers={"hx-request": "true"})
    assert r.status_code == 413, r.text[:200]


@pytest.mark.parametrize("path", ["/grade/..%2F..%2Fescape/grade", "/grade/../grade", "/review/..%2F..%2Fescape/decide",
                                  "/review/%2e%2e/bulk"])
def test_path_tricks_in_ui_labels_write_nothing_outside(ui: tuple[Any, Path], path: str) -> None:
    client, folder = ui
    before = sorted(p.name for p in folder.parent.iterdir())
    r = client.post(path, content=b"item=1&verdict=pass&answer=x&grader=eve&id=1&decision=accept",
                    headers={"hx-request": "true", "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code in (403, 404, 405, 409, 422), (path, r.status_code)
    assert sorted(p.name for p in folder.parent.iterdir()) == before
    assert not list(folder.rglob("*escape*")) and not (folder / "grades").exists()


@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "null"},
                                     {"hx-request": "true", "sec-fetch-site": "cross-site"}])
def test_forged_posts_are_refused(ui: tuple[Any, Path], headers: dict[str, str]) -> None:
    client, _ = ui
    for path in ("/playground/ask", "/review/gen/decide", "/grade/expert/grade"):
        r = client.post(path, content=b"question=hi", headers={"content-type": "application/x-www-form-urlencoded",
                                                                 **headers})
        assert r.status_code == 403, (path, headers, r.status_code)


def test_an_edited_report_html_runs_no_script_in_the_ui(ui: tuple[Any, Path]) -> None:
    client, _ = ui
    csp = client.get("/reports/expert/html").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp, csp


@pytest.mark.parametrize("path", ["/static/..%2Fapp.py", "/static/../app.py", "/static/%2e%2e/%2e%2e/pyproject.toml",
                                  "/reports/..%2F..%2Fstate/items/..%2F..%2Fpasswd", "/reports/..%2Fx/html",
                                  "/plan/..%2F..%2Fetc%2Fpasswd", "/runs/..%2F..%2Fstate.json"])
def test_path_tricks_in_ui_ids_read_nothing_outside(ui: tuple[Any, Path], path: str) -> None:
    client, _ = ui
    r = client.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert "import" not in r.text and "[project]" not in r.text and "root:" not in r.text


@pytest.mark.parametrize("headers,status", [
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}, 403),  # <img src>
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}, 200),  # a link
    ({"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}, 200),  # the page's own htmx
    ({}, 200)])  # not a browser
def test_other_sites_may_link_to_pages_but_not_load_them(ui: tuple[Any, Path], headers: dict[str, str],
                                                         status: int) -> None:
    client, _ = ui
    assert client.get("/plan", headers=headers).status_code == status
    regex = client.get("/review/gen/rows?q=(a%2B)%2B%24&regex=1", headers=headers).status_code  # ReDoS bait
    assert (regex == 403) == (headers.get("sec-fetch-site") == "cross-site"), regex


def test_a_client_that_stops_reading_its_answer_is_closed(gateway_url: str) -> None:
    host, port = gateway_url.removeprefix("http://").split(":")
    body = json.dumps({"model": "finetune.big", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(6)  # reads nothing: the gateway's send buffer fills, and body_timeout (2 s) passes
        s.settimeout(10)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    assert 0 < got < 20_000_000, got  # closed with most of the answer unsent, not held open for ever
