"""The synth step (issue 26, item 7): generation throughput, and the contamination filter's recall on real data.

1. Throughput: a local OpenAI-compatible server (a threaded http.server) answers every request after a fixed
   latency (0.1 s). The same synth step (task qa, ROWS chunks, filters that drop nothing) is applied twice side by
   side, each in its own workdir (its own journal): at the step's default concurrency (8) and strictly
   sequential (concurrency = 1). Rows/s is rows out over the step's wall time (``dsl apply`` of the synth step,
   its corpus applied before; a 4-row warm-up run first pays the imports). Target: speedup >= 6. ``ledger_ok``: both ledgers balance (in = out + dropped),
   every row came out, and both runs wrote the same rows.jsonl.
2. Contamination: every one of 1,000 TeleQnA items (../shared/data) planted in a row verbatim and once
   paraphrased (word order and synonyms, tests/_paraphrase.py), among 8,000 rows of other items, through
   ``sdk.synthfilter.contaminated``. Targets: recall 1.0 verbatim, >= 0.9 paraphrased.

Last line: ``synth speedup=<ratio> contamination_recall=<min of the two recalls> ledger_ok=<bool>``.
``--quick``: 16 rows at 0.02 s, 50 planted items among 200.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _quick import SHARED_DATA, pick

ROWS = pick(128, 16)
LATENCY = pick(0.1, 0.02)
N_EVAL, N_UNRELATED = pick(1000, 50), pick(8000, 200)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(LATENCY)
        chunk = body["messages"][-1]["content"].split("):\n", 1)[1].split("\n\nReply with")[0].strip()
        text = json.dumps({"question": f"What does this note say: {chunk[:60]}?", "answer": chunk})
        reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def run_step(folder: Path, port: int, concurrency: int, rows: int = ROWS) -> tuple[float, dict, bytes]:
    import sdk
    from dsl.parser import load
    from sdk.state import StateStore

    notes = folder / "notes"
    notes.mkdir(parents=True)
    for i in range(rows):
        (notes / f"n{i:04d}.md").write_text(f"Note {i}: the parameter P{i} of cell site S{i * 7 % 101} is set to "
                                            f"{i * 13 % 997} on the {['AMF', 'SMF', 'UPF', 'HSS'][i % 4]}.\n")
    (folder / "r.dsl").write_text(f"""domain b {{
  corpus notes {{ paths = ["notes/*.md"] }}
  synth gen {{ corpus = corpus.notes  rows = {rows}  concurrency = {concurrency}
              teacher = endpoint {{ url = "http://127.0.0.1:{port}/v1", model = "m" }}
              filters = {{ dedupe = none, contamination = false, supported = false }} }}
}}
""")
    spec = load(folder / "r.dsl")
    assert sdk.apply(spec, target=["corpus.notes"]).ok
    start = time.perf_counter()
    assert sdk.apply(load(folder / "r.dsl")).ok
    seconds = time.perf_counter() - start
    wd = folder / ".dsl" / "b"
    entry = StateStore(wd).load().steps["synth.gen"]
    art = wd / entry["artifact"]
    return seconds, json.loads((art / "ledger.json").read_text()), (art / "rows.jsonl").read_bytes()


def throughput() -> tuple[float, bool]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        run_step(tmp / "warm-up", server.server_address[1], 8, 4)  # imports and first calls paid before timing
        results = {}
        for c in (8, 1):
            results[c] = run_step(tmp / f"c{c}", server.server_address[1], c)
            seconds, ledger, _ = results[c]
            print(f"concurrency {c}: {ledger['out']} rows in {seconds:.2f}s = {ledger['out'] / seconds:.1f} rows/s "
                  f"(latency {LATENCY}s per request)", flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    (fast, lf, rows_f), (slow, ls, rows_s) = results[8], results[1]
    ok = all(lg["in"] == lg["out"] + len(lg["dropped"]) and lg["out"] == ROWS for lg in (lf, ls)) and rows_f == rows_s
    return (lf["out"] / fast) / (ls["out"] / slow), ok


def main() -> None:
    speedup, ledger_ok = throughput()
    print(f"rows/s speedup at concurrency 8 over sequential: {speedup:.2f} (target >= 6)", flush=True)
    recall = float("nan")
    if not (SHARED_DATA / "teleqna").is_dir():
        print(f"SKIP: {SHARED_DATA / 'teleqna'} is absent (the shared data folder sits beside the repository)")
    else:
        from tests._paraphrase import measure_contamination

        m = measure_contamination(SHARED_DATA, n_eval=N_EVAL, n_unrelated=N_UNRELATED)
        print(f"contamination recall verbatim={m['verbatim']:.3f} paraphrased={m['paraphrased']:.3f} "
              f"(new answer {m['new_answer']:.3f}; false positives {m['false_positive']:.4f} of {N_UNRELATED} "
              f"unrelated rows; {m['rows']} rows in {m['seconds']}s)", flush=True)
        recall = min(m["verbatim"], m["paraphrased"])
    print(f"synth speedup={speedup:.2f} contamination_recall={recall:.3f} ledger_ok={ledger_ok}")


if __name__ == "__main__":
    main()
