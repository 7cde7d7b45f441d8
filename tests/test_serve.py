"""The gateway as users meet it: `dsl serve` in its own process, the official openai client (chat, streaming,
models), Haystack's OpenAIChatGenerator, auth, OpenAI-shaped errors, /metrics, a 200-request load test at 32
concurrent, a fault test that kills the domain upstream mid-load, SIGTERM, and the SGLang command line."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import httpx
import pytest

import sdk
from dsl.parser import load
from tests._tiny import make_tiny_model
from tests.conftest import ROOT
from tests.test_serve_gateway import metric

pytestmark = pytest.mark.slow
KEY = "gw-secret-key-123"

UPSTREAM = textwrap.dedent('''
    import sys, uvicorn
    from fastapi import FastAPI
    app = FastAPI()
    @app.post("/v1/chat/completions")
    def chat(body: dict):
        return {"id": "u", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "upstream says INVITE [1]"},
                             "finish_reason": "stop"}]}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


class Served:
    def __init__(self, port: int, proc: subprocess.Popen, upstream: subprocess.Popen) -> None:
        self.port, self.proc, self.upstream = port, proc, upstream
        self.base = f"http://127.0.0.1:{port}"

    def client(self, key: str = KEY) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base}/v1", api_key=key, timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve")
    make_tiny_model(tmp / "model")
    (tmp / "docs").mkdir()
    (tmp / "docs" / "sip.txt").write_text("An INVITE request starts a SIP call. BYE ends it. The HSS stores subscribers.")
    rows = [{"text": t, "target": "domain"} for t in ("How does SIP INVITE work?", "What does the HSS store?",
            "How does BYE end a SIP call?", "Which SIP request starts a call?", "What is the S-CSCF?", "SIP call setup")]
    rows += [{"text": t, "target": "general"} for t in ("Best pasta recipe?", "How do I fix a bike?", "Capital of Peru?",
             "Recommend a novel", "Why is the sky blue?", "How to learn swimming")]
    (tmp / "route.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    (tmp / "r.dsl").write_text(f'''domain s {{
  base_model tiny {{ path = "model" }}
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag local {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = base_model.tiny }}
  rag remote {{ corpus = corpus.c  retriever = bm25  top_k = 1
               generator = endpoint {{ url = "http://127.0.0.1:{up_port}/v1", model = "up", timeout = 2, max_retries = 0 }} }}
  route {{ examples = "route.jsonl"  domain = rag.remote  general = base_model.tiny  holdout = 0.34 }}
  serve {{ port = {port}  api_key = env("GW_KEY")  max_batch_size = 8  max_tokens = 16  max_request_bytes = 20000 }}
}}
''')
    result = sdk.apply(load(tmp / "r.dsl"))
    assert result.ok, [o.error for o in result.failed]
    env = {**os.environ, "GW_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "serve", str(tmp / "r.dsl")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_http(f"http://127.0.0.1:{up_port}/docs", upstream)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    yield Served(port, proc, upstream)
    for p in (proc, upstream):
        if p.poll() is None:
            p.kill()
            p.wait()


def test_openai_client_models_chat_and_stream(served: Served) -> None:
    client = served.client()
    ids = {m.id for m in client.models.list().data}
    assert {"auto", "base_model.tiny", "rag.local", "rag.remote"} <= ids
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Which SIP request starts a call?"}], max_tokens=8)
    assert raw.headers["x-dsl-target"] == "rag.remote" and raw.headers["x-dsl-fallback"] == "false"
    body = json.loads(raw.text)
    assert body["dsl_target"] == "rag.remote" and body["sources"][0]["source"] == "docs/sip.txt"
    assert body["sources"][0]["cited"] is True  # the upstream's answer cites [1]
    assert raw.parse().choices[0].message.content == "upstream says INVITE [1]"
    general = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the best pasta recipe?"}], max_tokens=8)
    assert general.headers["x-dsl-target"] == "base_model.tiny"
    chunks = list(client.chat.completions.create(model="base_model.tiny", stream=True, max_tokens=6,
                                                 messages=[{"role": "user", "content": "Say something"}]))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == client.chat.completions.create(
        model="base_model.tiny", max_tokens=6, messages=[{"role": "user", "content": "Say something"}]).choices[0].message.content
    done = client.completions.create(model="rag.local", prompt="What stores subscribers?", max_tokens=4)
    assert isinstance(done.choices[0].text, str)


def test_haystack_openai_chat_generator(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.dataclasses import ChatMessage
    from haystack.utils import Secret

    monkeypatch.setenv("GW_CLIENT_KEY", KEY)
    gen = OpenAIChatGenerator(api_key=Secret.from_env_var("GW_CLIENT_KEY"), model="rag.remote",
                              api_base_url=f"{served.base}/v1", generation_kwargs={"max_tokens": 8})
    reply = gen.run(messages=[ChatMessage.from_user("Which SIP request starts a call?")])
    assert reply["replies"][0].text == "upstream says INVITE [1]"


def test_auth_errors_and_metrics(served: Served) -> None:
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        served.client("wrong").models.list()
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{served.base}/v1/chat/completions", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{served.base}/v1/chat/completions", json={"model": "auto", "messages": []}, headers=h)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{served.base}/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{served.base}/v1/chat/completions", headers=h,
                   json={"model": "auto", "messages": [{"role": "user", "content": "x" * 30000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{served.base}/v1/chat/completions", headers=h,  # a real rag system, but no question to retrieve for
                   json={"model": "rag.local", "messages": [{"role": "system", "content": "be brief"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages" and "pipeline" not in r.text
    assert httpx.get(f"{served.base}/openapi.json").status_code == 401
    assert httpx.get(f"{served.base}/openapi.json", headers=h).json()["paths"]
    metrics = httpx.get(f"{served.base}/metrics").text
    assert metric(metrics, "dsl_errors_total", code="401") >= 2 and "dsl_requests_total" in metrics
    assert KEY not in metrics


def test_load_200_requests_at_32_concurrent(served: Served) -> None:
    client = served.client()

    def one(i: int) -> float:
        t = time.perf_counter()
        out = client.chat.completions.create(model="base_model.tiny", max_tokens=8,
                                             messages=[{"role": "user", "content": f"Question number {i}?"}])
        assert out.choices[0].message.content is not None
        return time.perf_counter() - t

    with cf.ThreadPoolExecutor(32) as pool:
        latencies = sorted(pool.map(one, range(200)))
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
    print(f"\nload test: 200 requests at 32 concurrent, p50={p50 * 1000:.0f} ms p95={p95 * 1000:.0f} ms")
    assert len(latencies) == 200


def test_fault_kill_the_domain_upstream_mid_load(served: Served) -> None:
    client = served.client()

    def ask(i: int) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=4, messages=[{"role": "user", "content": f"Which SIP request starts a call? {i}"}])
        return raw.headers["x-dsl-target"], raw.headers["x-dsl-fallback"]

    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, i) for i in range(40)]
        time.sleep(0.3)
        served.upstream.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    after = [ask(i) for i in range(5)]
    assert all(r == ("base_model.tiny", "true") for r in after)  # the general target answers, marked as fallback
    assert {t for t, _ in results} <= {"rag.remote", "base_model.tiny"}
    assert metric(httpx.get(f"{served.base}/metrics").text, "dsl_fallbacks_total") >= 5


def test_sigterm_lets_requests_in_flight_finish(served: Served) -> None:
    client = served.client()
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.chat.completions.create, model="base_model.tiny", max_tokens=16,
                               messages=[{"role": "user", "content": f"long answer {i}"}]) for i in range(4)]
        time.sleep(0.2)
        served.proc.send_signal(signal.SIGTERM)
        replies = [f.result() for f in futures]
    assert all(r.choices[0].message.content is not None for r in replies)
    # uvicorn drains the requests, then re-raises the signal it captured (so -SIGTERM is a clean stop too)
    assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log = served.proc.stdout.read() if served.proc.stdout else ""
    assert "serving auto" in log and KEY not in log  # the gateway's whole output never shows the key


def test_sglang_command_line() -> None:
    from sdk.serving.sglang import launch_command, model_name

    cmd = launch_command("meta-llama/Meta-Llama-3-8B-Instruct", {"sip": "/a/adapter", "law": "/b/adapter"},
                         {"tp": 2, "dp": 1, "mem_fraction": 0.85, "max_loras_per_batch": 4, "extra_args": ["--trust-remote-code"]},
                         30000)
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    text = " ".join(cmd)
    assert "--model-path meta-llama/Meta-Llama-3-8B-Instruct" in text and "--enable-lora" in text
    assert "--lora-paths law=/b/adapter sip=/a/adapter" in text and "--tp 2" in text and "--dp 1" in text
    assert "--mem-fraction-static 0.85" in text and text.endswith("--trust-remote-code")
    assert model_name("meta-llama/Meta-Llama-3-8B-Instruct", "sip") == "meta-llama/Meta-Llama-3-8B-Instruct:sip"
