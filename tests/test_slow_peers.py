"""Slow peers hold nothing for long (loopback only, short timeouts set through the configuration): an upstream that
drips its answer one byte at a time is cut at the call's end-to-end deadline, and local models keep answering
while 40 such calls hang; a client that trickles its body is answered 408 and closed, and so is one answered
before its body arrived; a stream whose client leaves is counted in the metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from tests.test_gateway_faults import Served
from tests.test_serve_gateway import metric

KEY = "slow-peers-key-1234"


class Dripper:
    """A raw HTTP server that answers every request with headers promising 10,000 bytes, then sends one byte every
    0.2 s for as long as the client stays (a per-read timeout never fires). Counts the connections it served."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.open = self.served = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.served += 1
        try:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
            for _ in range(600):  # 2 minutes at most
                if self.stopped.is_set():
                    break
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            pass  # the client closed the connection: what we want
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture(scope="module")
def dripper() -> Iterator[Dripper]:
    d = Dripper()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dripper: Dripper) -> Iterator[Served]:
    import torch
    from transformers import AutoModelForCausalLM

    from sdk.serving.gateway import Gateway, create_app
    from tests._tiny import tiny_model_dir

    folder = tiny_model_dir(tmp_path_factory.mktemp("slow"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # scaled weights: greedy generation rarely stops early, so a stream lasts 48 tokens
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    model.save_pretrained(folder)
    variants = {"base_model.tiny": {"type": "model", "model": str(folder), "adapter": None, "tokenizer": None},
                "finetune.drip": {"type": "endpoint", "url": dripper.url, "model": "m", "timeout": 1.5,
                                  "max_retries": 2, "pool": 20},
                "finetune.narrow": {"type": "endpoint", "url": dripper.url, "model": "m", "timeout": 1.5,
                                    "max_retries": 0, "pool": 1, "api_key_env": "SLOW_PEERS_KEY"}}
    config = {"domain": "slow", "engine": "local", "max_batch_size": 8, "max_tokens": 48, "max_request_bytes": 20000,
              "timeout": 60, "api_key_env": None, "body_timeout": 1.0, "variants": variants, "router": None,
              "general": None, "domain_target": "finetune.drip", "withheld": {}}
    gateway = Gateway(config, preload=False)
    gateway._engine("base_model.tiny")
    served = Served(create_app(gateway), header_timeout=1.0, body_timeout=1.0)
    served.gateway = gateway  # type: ignore[attr-defined]
    yield served
    served.server.should_exit = True
    served.thread.join(timeout=30)


def ask(served: Served, model: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{served.base}/v1/chat/completions", timeout=timeout,
                      json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


def test_a_dripping_upstream_is_cut_at_the_deadline(dripper: Dripper) -> None:
    from sdk.upstream import Target, UpstreamError, chat

    target = Target(dripper.url, "m", timeout=1.0, max_retries=3, pool=1)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"timed out \(no answer within 1s\)"):
        chat(target, [{"role": "user", "content": "x"}], 4)
    took = time.monotonic() - started
    assert took < 3.0, took  # the deadline covers every read and every retry (a per-read timeout never fires)


def test_a_synth_teacher_dripping_its_answer_is_cut_at_the_deadline(dripper: Dripper) -> None:
    """The synth step's teacher client goes through the same end-to-end deadline: a dripping teacher fails the
    request with a short message naming it, instead of holding the step (and its threads) for ever."""
    from sdk.backends.data.synth_teacher import EndpointTeacher
    from sdk.errors import DslError
    from sdk.spec.objects import Endpoint

    teacher = EndpointTeacher(Endpoint(url=dripper.url, model="m", timeout=1.0, max_retries=2), 4, "synth.gen")
    with pytest.raises(DslError, match=r"^synth\.gen: the teacher .* failed after 1 attempt: the upstream timed "
                                       r"out \(no answer within 1s\)"):  # one deadline for the call and its retries
        teacher.ask([{"role": "user", "content": "Write a question."}], 8)


def test_local_models_answer_while_40_calls_hang_on_a_dripping_upstream(served: Served, dripper: Dripper) -> None:
    assert ask(served, "base_model.tiny").status_code == 200  # warm
    before = dripper.served
    with ThreadPoolExecutor(40) as pool:
        hanging = [pool.submit(ask, served, "finetune.drip", 20) for _ in range(40)]
        time.sleep(0.3)
        for _ in range(3):  # while all 40 hang, the local model answers
            r = ask(served, "base_model.tiny", timeout=15)
            assert r.status_code == 200 and r.headers["x-dsl-target"] == "base_model.tiny"
        replies = [h.result() for h in hanging]
    deadline = time.time() + 10  # under load the accept thread may take a connection after its caller gave up
    while dripper.served - before < 40 and time.time() < deadline:
        time.sleep(0.05)
    # each reply is the deadline's (none refused as busy, checked below); under heavy load a call may spend its
    # whole deadline before it connects, so the upstream may count fewer than 40 connections, never more
    assert 0 < dripper.served - before <= 40
    assert {r.json()["error"]["message"] for r in replies} == {
        "finetune.drip failed: the upstream timed out (no answer within 1.5s)"}
    with ThreadPoolExecutor(4) as pool:  # a pool of 1 admits 2 calls: the others are refused at once
        narrow = list(pool.map(lambda _: ask(served, "finetune.narrow", 20), range(4)))
    messages = [r.json()["error"]["message"] for r in narrow]
    assert sum("busy" in m for m in messages) >= 2 and {r.status_code for r in narrow} == {503}, messages
    deadline = time.time() + 10
    while dripper.open:  # every dripping connection was closed by the gateway
        assert time.time() < deadline, f"{dripper.open} connections to the dripping upstream are still open"
        time.sleep(0.1)


def _closed_within(s: socket.socket, seconds: float, trickle: bool) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it; keeps sending a byte every
    0.2 s meanwhile (``trickle``). Fails when the connection is still open after ``seconds``."""
    s.settimeout(0.2)
    reply, started = b"", time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if trickle:
                s.sendall(b" ")
        except OSError:
            return reply, time.monotonic() - started
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            return reply, time.monotonic() - started
        if not chunk:
            return reply, time.monotonic() - started
        reply += chunk
    raise AssertionError(f"the connection is still open after {seconds}s; received {reply[:200]!r}")


def test_a_trickling_client_is_answered_408_and_closed(served: Served) -> None:
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 200\r\n\r\n{\"model\": ").encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(head)
        reply, took = _closed_within(s, 8, trickle=True)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply, reply[:300]
    assert took < 6


def test_a_client_answered_before_its_body_arrived_is_closed(served: Served) -> None:
    for head in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",  # 413
                 b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"):  # answered without reading it
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            s.sendall(head)
            reply, took = _closed_within(s, 8, trickle=True)
        assert reply.split(b" ")[1] in (b"413", b"200") and took < 3, (reply[:200], took)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:  # stalls: headers, then nothing
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        reply, took = _closed_within(s, 8, trickle=False)
    assert reply.startswith(b"HTTP/1.1 200") and took < 3


def test_a_stream_whose_client_leaves_is_counted(served: Served) -> None:
    before = served.metrics()
    body = json.dumps({"model": "base_model.tiny", "max_tokens": 48, "stream": True,
                       "messages": [{"role": "user", "content": "tell me"}]})
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", content=body, timeout=30,
                      headers={"Content-Type": "application/json"}) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # the first chunk, then leave
    deadline = time.time() + 20
    while metric(served.metrics(), "dsl_stream_disconnects_total") <= metric(before, "dsl_stream_disconnects_total"):
        assert time.time() < deadline, "the stream's disconnect was not counted"
        time.sleep(0.1)
    counted = served.metrics()
    assert metric(counted, "dsl_disconnects_total") > metric(before, "dsl_disconnects_total")
    full = httpx.post(f"{served.base}/v1/chat/completions", content=body, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert full.status_code == 200 and full.text.rstrip().endswith("[DONE]")
    time.sleep(0.3)  # a stream read to its end is not a disconnect
    assert metric(served.metrics(), "dsl_stream_disconnects_total") == metric(counted, "dsl_stream_disconnects_total")


def test_a_client_that_sends_part_of_its_body_then_goes_silent_is_answered_408_and_closed(served: Served) -> None:
    body = b'{"model": "base_model.tiny", "messages": [{"role": "user", "content": "hi"}]}'
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(head + body[:20])  # headers and a part of the body, then nothing more
        reply, took = _closed_within(s, 8, trickle=False)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply, reply[:300]
    assert took < 6  # closed after the 1 s body deadline (and its grace), not left open waiting for the rest


def test_a_body_dripped_byte_by_byte_is_cut_at_the_total_body_deadline(served: Served) -> None:
    body = b'{"model": "base_model.tiny", "messages": [{"role": "user", "content": "' + b"a" * 200 + b'"}]}'
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(head)
        s.settimeout(0.05)
        reply, started, sent = b"", time.monotonic(), 0
        while time.monotonic() - started < 8:  # one byte every 50 ms: each read is quick, the whole body is not
            try:
                if sent < len(body):
                    s.sendall(body[sent:sent + 1])
                    sent += 1
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
        else:
            raise AssertionError(f"the connection is still open after 8 s; received {reply[:200]!r}")
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply, reply[:300]
    assert sent < len(body) and took < 6, (sent, len(body), took)  # cut by the deadline, not by the body's end


def test_a_hostile_chat_template_is_an_error_answer_not_a_hang(served: Served) -> None:
    engine = served.gateway._engine("base_model.tiny")  # type: ignore[attr-defined]
    kept = engine.tokenizer.chat_template
    engine.tokenizer.chat_template = "{% for i in range(10**12) %}{{ 'x' * 10**9 }}{% endfor %}"
    try:
        reply = ask(served, "base_model.tiny", timeout=20)
    finally:
        engine.tokenizer.chat_template = kept
    assert 400 <= reply.status_code < 600, reply.text
    assert "Traceback" not in reply.text and ask(served, "base_model.tiny").status_code == 200
