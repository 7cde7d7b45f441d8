"""The gateway under abuse, against a real uvicorn server in a thread (loopback only, bounded loops), with the
real `openai` client, raw HTTP bytes and raw sockets: client mistakes are 4xx in OpenAI's shape (lone surrogates,
strict `stream`, a rag target without a user message), any upstream failure falls back or is a clean 503 naming no
internals, retries with backoff up to `max_retries` (calls counted on a real server), clients that disconnect
cancel their generation (tokens counted by the engine), slow headers and slow bodies are cut off, /openapi.json
and /docs need the key, withheld systems are never served, and `dsl serve` refuses to start without its key."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests._openai_server import OpenAIServer, chat_completion
from tests.conftest import ROOT, run_dsl
from tests.test_serve_gateway import _router, free_port, metric

KEY = "faults-key-4242"
WITHHELD = {"finetune.sip": "gate of eval.expert failed: exact_match 0.12 < 0.5"}
INTERNALS = re.compile(r"Error\b|Exception|Traceback|pipeline|haystack|openai\.|httpx|\.py\b")


class Upstream:
    """One real OpenAI-compatible server whose behaviour depends on the requested model; calls are counted."""

    def __init__(self) -> None:
        from fastapi.responses import JSONResponse, PlainTextResponse

        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

        def handler(body: dict[str, Any], request: Any) -> Any:
            model = body["model"]
            with self.lock:
                n = self.calls[model] = self.calls.get(model, 0) + 1
            if model.startswith("flaky"):  # fails twice, then answers
                if n <= 2:
                    return JSONResponse({"error": {"message": "busy"}}, status_code=503, headers={"retry-after-ms": "20"})
                return chat_completion("recovered", model=model)
            if model == "empty":
                return {"id": "x", "object": "chat.completion", "created": 0, "model": model, "choices": []}
            if model == "garbage":
                return PlainTextResponse("<html>not an API</html>")
            if model == "bad-content":
                return {"choices": [{"index": 0, "message": {"role": "assistant", "content": 5}}]}
            if model == "fail500":
                return JSONResponse({"detail": "boom"}, status_code=500)
            return chat_completion("fine", model=model)

        self.server = OpenAIServer(handler)
        self.url = f"http://127.0.0.1:{self.server.port}/v1"


class Served:
    def __init__(self, app: Any, header_timeout: float, body_timeout: float = 30.0) -> None:
        import uvicorn

        from sdk.serving.asgi import server_config

        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, header_timeout, log_level="error",
                                                   body_timeout=body_timeout))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def client(self, key: str = KEY) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base}/v1", api_key=key, timeout=60, max_retries=0)

    def post(self, body: Any, path: str = "chat/completions", key: str = KEY) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.base}/v1/{path}", content=content, timeout=60,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics").text


@pytest.fixture(scope="module")
def env() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GWF_KEY", KEY)
        yield mp


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, env: Any, upstream: Upstream) -> Iterator[Served]:
    import torch
    from transformers import AutoModelForCausalLM

    from sdk.serving.gateway import Gateway, create_app
    from tests._tiny import make_tiny_model

    tmp = tmp_path_factory.mktemp("faults")
    folder = make_tiny_model(tmp / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # scaled weights: greedy generation varies and rarely stops early
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    model.save_pretrained(folder)

    def ep(model: str, retries: int = 0) -> dict[str, Any]:
        return {"type": "endpoint", "url": upstream.url, "model": model, "timeout": 10, "max_retries": retries}

    variants = {"base_model.tiny": {"type": "model", "model": str(folder), "adapter": None, "tokenizer": None},
                "finetune.empty": ep("empty"), "finetune.garbage": ep("garbage"), "finetune.bad": ep("bad-content"),
                "finetune.fail": ep("fail500"), "finetune.flaky": ep("flaky3", 3), "finetune.flaky1": ep("flaky1", 1),
                "finetune.down": {**ep("x"), "url": f"http://127.0.0.1:{free_port()}/v1"},
                "finetune.remote": ep("empty"), "finetune.sip": ep("sip"), "rag.docs": {"type": "rag", "label": "docs", "generator": "base_model.tiny"}}
    config = {"domain": "faults", "engine": "local", "max_batch_size": 8, "max_tokens": 48, "max_request_bytes": 20000,
              "timeout": 60, "api_key_env": "GWF_KEY", "body_timeout": 1.0, "variants": variants,
              "router": str(_router(tmp / "router", True)), "general": "base_model.tiny",
              "domain_target": "finetune.remote", "withheld": WITHHELD}
    # the rag variant is not opened (preload=False): the requests sent to it are refused before it would be
    gateway = Gateway(json.loads(json.dumps(config)), preload=False)
    gateway._engine("base_model.tiny")
    served = Served(create_app(gateway), header_timeout=1.0)
    served.gateway = gateway  # type: ignore[attr-defined]
    yield served
    served.server.should_exit = True
    served.thread.join(timeout=30)


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)
    assert not INTERNALS.search(err["message"]), err["message"]
    return err


def test_client_mistakes_are_4xx_in_openai_shape(served: Served) -> None:
    surrogate = b'{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    for model in (b"base_model.tiny", b"auto"):
        err = assert_openai_error(served.post(surrogate % model), 400)
        assert "surrogate" in err["message"] and err["param"] == "messages.0.content"
    err = assert_openai_error(served.post(b'{"model": "auto", "messages": [{"role": "user", "content": '
                                          b'[{"type": "text", "text": "\\ud800"}]}]}'), 400)
    assert err["param"] == "messages.0.content"
    err = assert_openai_error(served.post(b'{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}'), 400)
    assert err["param"] == "model"
    err = assert_openai_error(served.post(b'{"model": "base_model.tiny", "prompt": ["ok", "\\ud800"]}', "completions"), 400)
    assert err["param"] == "prompt"
    for field, value in (("stream", "yes"), ("stream", 1), ("max_tokens", "5"), ("max_tokens", 4.0),
                         ("temperature", "0.5")):
        body = {"model": "base_model.tiny", "messages": [{"role": "user", "content": "x"}], field: value}
        err = assert_openai_error(served.post(body), 400)
        assert err["param"] == field
    assert served.post({"model": "base_model.tiny", "max_tokens": 2, "temperature": 1,
                        "messages": [{"role": "user", "content": "x"}]}).status_code == 200  # an int is a number
    for messages in ([{"role": "system", "content": "be brief"}], [{"role": "user", "content": "   "}],
                     [{"role": "assistant", "content": "hello"}]):
        err = assert_openai_error(served.post({"model": "rag.docs", "messages": messages}), 400)
        assert "user message" in err["message"] and err["param"] == "messages"
    from openai import BadRequestError

    with pytest.raises(BadRequestError):  # the official client sees a 400 too
        served.client().chat.completions.create(model="rag.docs", messages=[{"role": "system", "content": "x"}])
    assert 'code="500"' not in served.metrics() and 'code="503"' not in served.metrics()


@pytest.mark.parametrize("variant,reason", [("finetune.empty", "without choices"), ("finetune.garbage", "malformed"),
                                            ("finetune.bad", "malformed"), ("finetune.fail", "answered 500"),
                                            ("finetune.down", "unreachable")])
def test_every_upstream_failure_is_a_clean_503(served: Served, variant: str, reason: str) -> None:
    err = assert_openai_error(served.post({"model": variant, "messages": [{"role": "user", "content": "SIP?"}]}), 503)
    assert err["code"] == "upstream_unavailable" and err["type"] == "server_error"
    assert err["message"].startswith(f"{variant} failed: the upstream ") and reason in err["message"], err["message"]


def test_auto_falls_back_to_general_when_the_upstream_has_no_choices(served: Served) -> None:
    raw = served.client().chat.completions.with_raw_response.create(
        model="auto", max_tokens=4, messages=[{"role": "user", "content": "How does SIP INVITE work in IMS?"}])
    body = json.loads(raw.text)
    assert raw.status_code == 200 and raw.headers["x-dsl-target"] == "base_model.tiny"
    assert body["dsl_fallback"] is True and body["dsl_fallback_reason"] == "finetune.remote: the upstream answered without choices"
    assert body["dsl_routing"]["target"] == "domain"


def test_upstream_retries_with_backoff_up_to_max_retries(served: Served, upstream: Upstream) -> None:
    r = served.post({"model": "finetune.flaky", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "recovered"
    assert upstream.calls["flaky3"] == 3  # two 503s, then the answer, within max_retries = 3
    err = assert_openai_error(served.post({"model": "finetune.flaky1", "messages": [{"role": "user", "content": "x"}]}), 503)
    assert upstream.calls["flaky1"] == 2 and "answered 503" in err["message"]  # max_retries = 1: two calls, no more
    before = upstream.calls.get("fail500", 0)
    assert served.post({"model": "finetune.fail", "messages": [{"role": "user", "content": "x"}]}).status_code == 503
    assert upstream.calls["fail500"] == before + 1  # max_retries = 0: one call


def _engine_counters(served: Served) -> dict[str, float]:
    text = served.metrics()
    return {k: metric(text, f"dsl_engine_{k}_total", variant="base_model.tiny")
            for k in ("tokens", "dropped", "stopped", "tokens_after_cancel", "batched_requests")}


def _wait_engine_idle(served: Served) -> None:
    engine = served.gateway.engines["base_model.tiny"]  # type: ignore[attr-defined]
    deadline = time.time() + 120
    while not engine.idle():
        assert time.time() < deadline, "the engine never became idle"
        time.sleep(0.05)


@pytest.mark.alone  # a client's leaving is seen when the event loop reads its end of stream: a busy machine delays it
def test_disconnected_clients_cancel_their_generation(served: Served) -> None:
    _wait_engine_idle(served)
    before = _engine_counters(served)
    one = served.client().chat.completions.create(model="base_model.tiny", max_tokens=48,
                                                  messages=[{"role": "user", "content": "Tell me about SIP"}])
    control = _engine_counters(served)
    assert control["tokens"] - before["tokens"] >= one.usage.completion_tokens >= 24  # the counter counts tokens
    body = json.dumps({"model": "base_model.tiny", "max_tokens": 48,
                       "messages": [{"role": "user", "content": "Write a long answer about IMS"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    for _ in range(40):  # each client sends its request and leaves before any response
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            s.sendall(request)
    deadline = time.time() + 120
    while True:
        now = _engine_counters(served)
        if now["dropped"] + now["stopped"] - control["dropped"] - control["stopped"] >= 40:
            break
        assert time.time() < deadline, f"not every request was cancelled: {now}"
        time.sleep(0.1)
    _wait_engine_idle(served)
    after = _engine_counters(served)
    stopped = after["stopped"] - control["stopped"]
    generated = after["tokens"] - control["tokens"]
    after_cancel = after["tokens_after_cancel"] - control["tokens_after_cancel"]
    print(f"\n40 disconnected clients: {after['dropped'] - control['dropped']:.0f} dropped before generation, "
          f"{stopped:.0f} stopped while generating, {generated:.0f} tokens generated in all "
          f"(vs {40 * one.usage.completion_tokens} if they had run), {after_cancel:.0f} after their cancellation")
    assert after_cancel <= stopped  # at most the one token in flight when the client's cancellation was seen
    assert generated < 40 * one.usage.completion_tokens / 4
    assert metric(served.metrics(), "dsl_disconnects_total") >= 40


def test_streams_token_by_token_and_stop_when_the_client_leaves(served: Served) -> None:
    client = served.client()
    messages = [{"role": "user", "content": "How does a SIP call start?"}]
    whole = client.chat.completions.create(model="base_model.tiny", max_tokens=40, messages=messages)
    chunks = list(client.chat.completions.create(model="base_model.tiny", max_tokens=40, messages=messages, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 5 and "".join(pieces) == whole.choices[0].message.content  # token by token, same text
    assert chunks[-1].choices[0].finish_reason == "stop"
    _wait_engine_idle(served)
    before = _engine_counters(served)
    stream = client.chat.completions.create(model="base_model.tiny", max_tokens=48, messages=messages, stream=True)
    for n, _ in enumerate(stream):  # leave after the first pieces
        if n == 2:
            break
    stream.close()
    deadline = time.time() + 60
    while _engine_counters(served)["stopped"] == before["stopped"]:
        assert time.time() < deadline, "the stream's generation did not stop"
        time.sleep(0.05)
    _wait_engine_idle(served)
    assert _engine_counters(served)["tokens"] - before["tokens"] < 48


def test_slow_headers_and_slow_bodies_are_cut_off(served: Served) -> None:
    for opening in (b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"):  # silent, then slow headers
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
            s.sendall(opening)
            started = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server (header timeout 1 s), not by our 10 s timeout
            assert time.monotonic() - started < 9
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"model\": ").encode())
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply


def test_openapi_and_docs_need_the_key(served: Served) -> None:
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(f"{served.base}{path}").status_code == 401
        assert httpx.get(f"{served.base}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{served.base}{path}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{served.base}/health").status_code == 200


def test_withheld_systems_are_listed_and_refused(served: Served) -> None:
    from openai import NotFoundError

    from sdk.serving.gateway import Gateway

    listed = httpx.get(f"{served.base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    ids = {m["id"] for m in listed["data"]}
    assert "finetune.sip" not in ids and {"auto", "base_model.tiny", "finetune.flaky"} <= ids
    assert listed["withheld"] == [{"id": "finetune.sip", "reason": WITHHELD["finetune.sip"]}]
    assert httpx.get(f"{served.base}/health").json()["withheld"] == WITHHELD
    with pytest.raises(NotFoundError) as caught:
        served.client().chat.completions.create(model="finetune.sip", messages=[{"role": "user", "content": "x"}])
    err = caught.value.body
    assert err["code"] == "model_not_found" and "withheld" in err["message"] and "eval.expert" in err["message"]
    gateway = Gateway({"variants": {"finetune.sip": {"type": "endpoint", "url": "http://x/v1", "model": "m"}}},
                      preload=False)
    assert gateway.withheld == {} and gateway.models == ["finetune.sip"]  # no "withheld" key: nothing withheld


def test_dsl_serve_refuses_to_start_without_its_key(tmp_path: Path) -> None:
    import os

    import sdk
    from dsl.parser import load
    from tests._tiny import make_tiny_model

    make_tiny_model(tmp_path / "model")
    port = free_port()
    (tmp_path / "r.dsl").write_text(f'''domain s {{
  base_model tiny {{ path = "model" }}
  serve {{ port = {port}  api_key = env("GWF_UNSET_KEY") }}
}}
''')
    assert sdk.apply(load(tmp_path / "r.dsl")).ok
    env = {k: v for k, v in os.environ.items() if k != "GWF_UNSET_KEY"}
    proc = run_dsl("serve", str(tmp_path / "r.dsl"), env={"GWF_UNSET_KEY": ""})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "GWF_UNSET_KEY" in lines[0] and "--no-auth" in lines[0]
    assert "Traceback" not in proc.stderr
    server = subprocess.Popen([sys.executable, "-m", "dsl.cli", "serve", str(tmp_path / "r.dsl"), "--no-auth"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None and time.time() < deadline, "dsl serve --no-auth did not start"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert r.status_code == 200 and "base_model.tiny" in {m["id"] for m in r.json()["data"]}
    finally:
        server.terminate()
        server.wait(timeout=60)
    log = server.stdout.read() if server.stdout else ""
    assert "warning: GWF_UNSET_KEY is unset and --no-auth was given" in log
