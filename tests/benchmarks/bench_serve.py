"""Serving throughput: tokens/s of the embedded engine through the gateway (its own process, `Gateway` + `serve`
as `dsl serve` runs them) at 1, 8 and 32 concurrent real `openai` clients, over plain transformers `generate`
one request at a time on the same model, prompts and token budget (measured before and after the gateway runs;
the better of the two counts, since other load on a small machine swings single runs); and p50/p95 time to
first token of streamed chat completions at 8 concurrent clients. Target: ratio_at_8 >= 3. Last line:
`serve ratio_at_8=<r> ttft_p50_ms=<t>`. `--quick`: a 1-layer model, 4 new tokens, a few requests a level.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import pick  # noqa: E402

MAX_TOKENS = pick(32, 4)
BATCH = 8  # the serve block's default max_batch_size
PER_LEVEL = pick({1: 12, 8: 48, 32: 96}, {1: 2, 8: 8, 32: 8})
LAYERS, HIDDEN, TTFT_REQUESTS = pick(4, 1), pick(256, 64), pick(32, 8)

SERVER = r'''
import json, sys
from sdk.serving.gateway import Gateway, serve
serve(Gateway(json.load(open(sys.argv[1]))), "127.0.0.1", int(sys.argv[2]))
'''


def question(i: int) -> str:
    topics = ["SIP INVITE", "the S-CSCF", "VoLTE bearers", "Diameter Cx", "RTP and SDP", "the HSS", "IMS registration"]
    return f"Question {i}: explain {topics[i % len(topics)]} in a few sentences, please."


def build_model(folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from sdk.backends.training.common import SAMPLE_TEXT, make_tiny_model

    make_tiny_model(folder, SAMPLE_TEXT * 4, layers=LAYERS, hidden=HIDDEN, heads=8, vocab=800, context=512)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # scaled random weights: greedy generation varies and rarely ends early
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    model.save_pretrained(folder)
    return folder


def one_at_a_time(folder: Path, n: int) -> float:
    """Tokens/s of plain transformers generate, one prompt at a time (the prompt as the engine writes it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdk.backends.models import ModelHandle
    from sdk.serving.engine import LocalEngine

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    engine = LocalEngine(ModelHandle(model=str(folder)), 1)  # only for its prompt format
    prompts = [engine.prompt([{"role": "user", "content": question(i)}]) for i in range(n)]
    engine.close()
    tokens, started = 0, time.perf_counter()
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = out[0][ids["input_ids"].shape[1]:].tolist()
        tokens += new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
    return tokens / (time.perf_counter() - started)


def through_gateway(base: str, clients: int, n: int) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=300, max_retries=0)

    def ask(i: int) -> int:
        reply = client.chat.completions.create(model="base_model.tiny", max_tokens=MAX_TOKENS,
                                               messages=[{"role": "user", "content": question(i)}])
        return reply.usage.completion_tokens

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(ask, range(n)))
    return tokens / (time.perf_counter() - started)


def ttft(base: str, clients: int, n: int) -> list[float]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=300, max_retries=0)

    def first(i: int) -> float:
        started = time.perf_counter()
        stream = client.chat.completions.create(model="base_model.tiny", max_tokens=MAX_TOKENS, stream=True,
                                                messages=[{"role": "user", "content": question(i)}])
        seen = None
        for chunk in stream:
            if seen is None and chunk.choices and chunk.choices[0].delta.content:
                seen = time.perf_counter() - started
        return seen if seen is not None else time.perf_counter() - started

    with cf.ThreadPoolExecutor(clients) as pool:
        return sorted(pool.map(first, range(n)))


def batch_counts(base: str) -> tuple[float, float]:
    """(batches, batched requests) of the local engine, from /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
              for s in f.samples}
    return values.get("dsl_engine_batches_total", 0.0), values.get("dsl_engine_batched_requests_total", 0.0)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> None:
    import httpx

    folder = build_model(work / "model")
    baseline = [one_at_a_time(folder, PER_LEVEL[1])]  # once before the gateway runs, once after: the best counts
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"domain": "bench", "engine": "local", "max_batch_size": BATCH, "max_tokens": MAX_TOKENS,
              "max_request_bytes": 100000, "timeout": 600, "api_key_env": None, "router": None, "general": None,
              "domain_target": None,
              "variants": {"base_model.tiny": {"type": "model", "model": str(folder), "adapter": None, "tokenizer": None}}}
    (work / "serve.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(work / "serve.json"), str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("the gateway did not start")
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        through_gateway(base, 4, pick(8, 2))  # warm-up
        rates, sizes = {}, {}
        for c, n in PER_LEVEL.items():
            before = batch_counts(base)
            rates[c] = through_gateway(base, c, n)
            after = batch_counts(base)
            sizes[c] = (after[1] - before[1]) / max(1.0, after[0] - before[0])
        firsts = ttft(base, 8, TTFT_REQUESTS)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    baseline.append(one_at_a_time(folder, PER_LEVEL[1]))
    base_tps = max(baseline)
    p50 = statistics.median(firsts) * 1000
    p95 = firsts[max(0, int(0.95 * len(firsts)) - 1)] * 1000
    print(f"model: {LAYERS}-layer Llama, hidden {HIDDEN}, vocab 800; {MAX_TOKENS} new tokens per request; greedy; "
          f"max_batch_size {BATCH}; {os.cpu_count()} CPU cores")
    print(f"plain transformers generate, one request at a time: {base_tps:.1f} tokens/s "
          f"(best of {', '.join(f'{b:.1f}' for b in baseline)}: before and after the gateway runs)")
    for c, r in rates.items():
        print(f"gateway, {c:>2} concurrent openai clients ({PER_LEVEL[c]} requests): {r:.1f} tokens/s "
              f"(x{r / base_tps:.2f}), {sizes[c]:.1f} requests per batch on average")
    print(f"streamed chat at 8 concurrent clients, time to first token: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    ratio = rates[8] / base_tps
    print(f"target: ratio_at_8 >= 3 -> {'met' if ratio >= 3 else 'NOT met'}")
    print(f"serve ratio_at_8={ratio:.2f} ttft_p50_ms={p50:.0f}")


if __name__ == "__main__":
    main()
