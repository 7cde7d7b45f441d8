"""The gateway's parts in one process (real uvicorn servers on 127.0.0.1 in threads): the local engine's left-padded
batches equal one-at-a-time generation, timeouts of the domain upstream fall back to general (or 503 without one),
the "general" alias, chunked oversized bodies, batched /v1/completions (and streaming them), upstream keys that
never leak, the serve step's SGLang plan for trained adapters, and SGLang readiness and failures."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from sdk.errors import DslError

UPSTREAM_KEY = "upstream-secret-777"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Background:
    """A uvicorn server for an ASGI app in a thread, stopped by stop()."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose weights are scaled up so greedy generation varies from token to token (a freshly
    initialised one repeats a single token, which would make the batching comparison vacuous)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests._tiny import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    model.save_pretrained(folder)
    return folder


def test_left_padded_batches_equal_one_at_a_time(model_dir: Path) -> None:
    from sdk.backends.models import ModelHandle
    from sdk.serving.engine import LocalEngine

    engine = LocalEngine(ModelHandle(model=str(model_dir)), max_batch_size=8)
    try:
        questions = ["Hi", "What does the HSS store for each IMS subscriber in the home network?", "SIP INVITE", "ok?"]
        prompts = [[{"role": "user", "content": q}] for q in questions]
        alone = [engine.generate(p, 10) for p in prompts]
        assert engine.batches == 4
        futures = [engine.submit(engine.prompt(p), 10) for p in prompts]
        together = [f.result(timeout=60) for f in futures]
        assert engine.batches < 8 and engine.requests == 8  # the four queued requests shared batches
        assert together == alone
        assert len({text for text, _, _ in alone}) == 4 and all(c == 10 for _, _, c in alone)
        assert len({p for _, p, _ in alone}) > 1  # different prompt lengths: left padding was exercised
    finally:
        engine.close()


SLOW_UPSTREAM = textwrap.dedent('''
    import sys, time, uvicorn
    from fastapi import FastAPI, Request
    app = FastAPI()
    @app.get("/health")
    def health():
        return {"ok": True}
    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if request.headers.get("authorization") != "Bearer " + sys.argv[3]:
            return {"error": "no key"}
        time.sleep(float(sys.argv[2]))
        return {"id": "u", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "domain answer"},
                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
''')


def _upstream(delay: float) -> tuple[Any, int]:
    import subprocess

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_UPSTREAM, str(port), str(delay), UPSTREAM_KEY])
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, port
        except httpx.HTTPError:
            assert proc.poll() is None and time.time() < deadline, "upstream did not start"
            time.sleep(0.2)


def _router(folder: Path, general: bool) -> Path:
    from sdk.backends.routing.route import Router, train
    from tests.test_route import DOMAIN, GENERAL

    meta, arrays, _ = train(DOMAIN + GENERAL, ["domain"] * len(DOMAIN) + ["general"] * len(GENERAL), "tfidf", 0, "")
    meta.update(targets={"domain": "finetune.remote", **({"general": "base_model.tiny"} if general else {})},
                threshold=0.5)
    import numpy as np

    folder.mkdir(parents=True)
    (folder / "router.json").write_text(json.dumps(meta))
    np.savez(folder / "router.npz", **arrays)
    Router.load(folder)
    return folder


@pytest.fixture(scope="module")
def gateways(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: Any) -> Iterator[Any]:
    from sdk.serving.gateway import Gateway, create_app

    monkeypatch_module.setenv("UP_KEY", UPSTREAM_KEY)
    slow, slow_port = _upstream(3.0)
    fast, fast_port = _upstream(0.0)
    tmp = tmp_path_factory.mktemp("gw")
    base = {"domain": "t", "engine": "local", "max_batch_size": 8, "max_tokens": 8, "max_request_bytes": 5000,
            "timeout": 60, "api_key_env": None}
    tiny = {"type": "model", "model": str(model_dir), "adapter": None, "tokenizer": None}

    def remote(port: int) -> dict[str, Any]:
        return {"type": "endpoint", "url": f"http://127.0.0.1:{port}/v1", "model": "m", "timeout": 1.0, "max_retries": 0,
                "api_key_env": "UP_KEY"}

    with_general = Gateway({**base, "variants": {"base_model.tiny": tiny, "finetune.remote": remote(slow_port),
                                                 "finetune.fast": remote(fast_port)},
                            "router": str(_router(tmp / "r1", True)), "general": "base_model.tiny",
                            "domain_target": "finetune.remote"})
    without = Gateway({**base, "variants": {"finetune.remote": remote(slow_port)},
                       "router": str(_router(tmp / "r2", False)), "general": None, "domain_target": "finetune.remote"})
    servers = [Background(create_app(with_general)), Background(create_app(without))]
    yield servers
    for s in servers:
        s.stop()
    for p in (slow, fast):
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _chat(url: str, model: str, text: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4, **kw})


def test_timeout_falls_back_to_general_and_direct_calls_get_503(gateways: Any) -> None:
    url = gateways[0].url
    r = _chat(url, "auto", "How does SIP INVITE work in IMS?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-dsl-target"] == "base_model.tiny" and r.headers["x-dsl-fallback"] == "true"
    assert body["dsl_fallback"] is True and body["dsl_fallback_reason"].startswith("finetune.remote")
    assert body["dsl_routing"]["target"] == "domain" and body["dsl_routing"]["probability"] >= 0.5
    r = _chat(url, "finetune.remote", "How does SIP INVITE work?")  # addressed directly: no fallback
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert "timed out" in r.json()["error"]["message"] or "unreachable" in r.json()["error"]["message"]
    r = _chat(url, "finetune.fast", "anything")  # the key travelled to the upstream (it answers only with it)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "domain answer"
    assert r.json()["usage"]["total_tokens"] == 5
    r = _chat(url, "general", "What is the capital of Peru?")
    assert r.status_code == 200 and r.headers["x-dsl-target"] == "base_model.tiny"
    assert "general" in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
    metrics = httpx.get(f"{url}/metrics").text
    assert metric(metrics, "dsl_fallbacks_total") == 1 and metric(metrics, "dsl_errors_total", code="503") == 1
    assert UPSTREAM_KEY not in metrics and UPSTREAM_KEY not in r.text


def test_without_general_auto_answers_503_with_a_clear_message(gateways: Any) -> None:
    url = gateways[1].url
    r = _chat(url, "auto", "How does SIP INVITE work in IMS?")
    assert r.status_code == 503 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "finetune.remote failed" in r.json()["error"]["message"]
    r = _chat(url, "auto", "What is a good pasta recipe?")
    assert r.status_code == 503 and "no" in r.json()["error"]["message"] and "general" in r.json()["error"]["message"]
    r = _chat(url, "general", "x")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_chunked_oversized_and_malformed_bodies_get_4xx(gateways: Any) -> None:
    url = gateways[0].url

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    for body in ({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]},
                 {"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
                 {"model": "auto", "messages": "hello"}, {"messages": [{"role": "user", "content": "x"}]},
                 {"model": "auto", "prompt": ["x"] * 65}):
        path = "completions" if "prompt" in body else "chat/completions"
        r = httpx.post(f"{url}/v1/{path}", json=body)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (body, r.text)
    r = httpx.get(f"{url}/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_completions_batch_prompts_and_stream(gateways: Any) -> None:
    from openai import OpenAI

    url = gateways[0].url
    before = httpx.get(f"{url}/metrics").text
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    prompts = [f"Prompt {i} about calls" for i in range(6)]
    done = client.completions.create(model="base_model.tiny", prompt=prompts, max_tokens=4)
    assert [c.index for c in done.choices] == list(range(6)) and done.usage.completion_tokens == 24
    one = client.completions.create(model="base_model.tiny", prompt=prompts[2], max_tokens=4)
    assert one.choices[0].text == done.choices[2].text
    streamed = list(client.completions.create(model="base_model.tiny", prompt=prompts[2], max_tokens=4, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == one.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "stop"

    def batches(text: str) -> float:
        return metric(text, "dsl_engine_batches_total", variant="base_model.tiny")

    after = httpx.get(f"{url}/metrics").text
    assert batches(after) - batches(before) < 8  # the six prompts of one request were batched


def test_serve_step_plans_sglang_for_the_adapters(tmp_path: Path) -> None:
    from dsl.parser import load
    from sdk.backends.base import Artifact, StepContext
    from sdk.backends.serve.serve import ServeBackend
    from sdk.progress import Progress

    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                                               {"role": "assistant", "content": "b"}]}) + "\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("SIP notes for the serve test.")
    (tmp_path / "r.dsl").write_text('''domain s {
  base_model b { path = "model" }
  corpus c { paths = ["docs/*.txt"]  min_chars = 5 }
  dataset d { path = "d.jsonl"  format = chat }
  pretrain p { from = base_model.b  corpus = corpus.c }
  finetune sip { from = base_model.b  data = dataset.d  method = lora }
  finetune law { from = base_model.b  data = dataset.d  method = lora }
  rag docs { corpus = corpus.c  retriever = bm25  generator = finetune.sip }
  serve { engine = sglang  sglang = { tp = 2, dp = 1, mem_fraction = 0.8 }  engine_port = 31000 }
}
''')
    spec = load(tmp_path / "r.dsl")
    arts = {}
    for step_id, outputs in {"base_model.b": {"model": "/models/base", "model_source": "local"},
                             "pretrain.p": {"model": "model", "model_source": "artifact"},
                             "finetune.sip": {"adapter": "adapter", "base": "/models/base", "base_source": "local"},
                             "finetune.law": {"adapter": "adapter", "base": "/models/base", "base_source": "local"}}.items():
        (tmp_path / step_id).mkdir()
        arts[step_id] = Artifact(step_id, tmp_path / step_id, {"outputs": outputs, "metrics": {}})
    from sdk.planner import step_config

    (tmp_path / "rag.docs").mkdir()  # the serve step reads a rag system's generator from its applied manifest
    arts["rag.docs"] = Artifact("rag.docs", tmp_path / "rag.docs",
                                {"outputs": {}, "metrics": {}, "config": step_config(spec, "rag", spec.get("rag.docs"))})
    out = tmp_path / "out"
    out.mkdir()
    ctx = StepContext(spec=spec, step_id="serve.default", kind="serve", label="default", block=spec.serve["default"],
                      fingerprint="f", out_dir=out, workdir=tmp_path, checkpoint_dir=tmp_path / "c", inputs=arts,
                      progress=Progress(enabled=False), log=lambda _: None, options={"artifacts": arts})
    result = ServeBackend().run(ctx)
    config = json.loads((out / "serve.json").read_text())
    sg = config["sglang"]
    assert sg["base"] == "/models/base" and sg["port"] == 31000
    cmd = " ".join(sg["command"])
    sip, law = tmp_path / "finetune.sip" / "adapter", tmp_path / "finetune.law" / "adapter"
    assert "--model-path /models/base" in cmd and f"--lora-paths law={law} sip={sip}" in cmd
    assert "--enable-lora" in cmd and "--tp 2 --dp 1" in cmd and "--port 31000" in cmd and "--mem-fraction-static 0.8" in cmd
    v = config["variants"]
    assert v["finetune.sip"]["sglang_model"] == "/models/base:sip" and v["finetune.law"]["sglang_model"] == "/models/base:law"
    assert v["base_model.b"]["sglang_model"] == "/models/base"
    assert "sglang_model" not in v["pretrain.p"] and "pretrain.p is not on /models/base" in result.summary
    assert v["rag.docs"]["generator"] == "finetune.sip"


def test_sglang_start_waits_for_health_and_reports_failures() -> None:
    import importlib.util

    from sdk.serving import sglang

    proc, port = None, free_port()
    cmd = [sys.executable, "-c", SLOW_UPSTREAM, str(port), "0", "k"]
    lines: list[str] = []
    try:
        proc = sglang.start(cmd, port, timeout=60, log=lines.append)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert lines[0].startswith("starting SGLang") and "ready" in lines[-1]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    with pytest.raises(DslError, match="exited with code 3"):
        sglang.start([sys.executable, "-c", "raise SystemExit(3)"], free_port(), timeout=30)
    with pytest.raises(DslError, match="not become ready"):
        sglang.start([sys.executable, "-c", "import time; time.sleep(30)"], free_port(), timeout=1.5)
    if importlib.util.find_spec("sglang") is None:
        with pytest.raises(DslError, match="not installed"):
            sglang.start(sglang.launch_command("/models/base", {}, {}, free_port()), 1, timeout=1)


def test_engine_sglang_without_sglang_is_refused_at_plan_time(tmp_path: Path, model_dir: Path) -> None:
    """The plan refuses engine = sglang where sglang (or a CUDA GPU) is missing, before anything runs; `dsl serve`
    then has nothing applied to serve and says so, without a traceback."""
    import importlib.util
    import shutil

    from tests.conftest import run_dsl

    if importlib.util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here: the plan would accept engine = sglang")
    shutil.copytree(model_dir, tmp_path / "model")  # inside the recipe's folder (paths outside it are refused)
    (tmp_path / "r.dsl").write_text(f'''domain s {{
  base_model tiny {{ path = "model" }}
  serve {{ engine = sglang  engine_port = {free_port()} }}
}}
''')
    proc = run_dsl("apply", str(tmp_path / "r.dsl"), "--no-progress")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "sglang, which is not installed" in out, out
    proc = run_dsl("serve", str(tmp_path / "r.dsl"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.strip(), proc.stderr
