"""Serving throughput with and without dynamic batching (loopback only).

Starts `aiayn serve` twice on the same checkpoint, once batching concurrent requests (the default)
and once decoding one request at a time (--no-batching), and sends each the same load: 500
requests of one Multi30k test sentence each, from 16 concurrent clients, beam 4. Prints
throughput, p50/p99 latency and the ratio.

    .venv/bin/python bench/serve_load.py --checkpoint bench/out/m30k_small
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiayn.data.corpus import read_lines
from aiayn.serving.launch import start_server
from loadgen import run_load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--out", default="bench/out/serve_load.json")
    a = ap.parse_args()
    sentences = read_lines(DATA / "test_2016_flickr.de.gz")
    results = {}
    for label, extra in (("dynamic batching", ()), ("one request at a time", ("--no-batching",))):
        process, url = start_server(a.checkpoint, *extra)
        try:
            run_load(url, sentences[:32], n_requests=32, clients=a.clients, beam=a.beam)  # warm-up
            result = run_load(url, sentences, n_requests=a.requests, clients=a.clients, beam=a.beam)
        finally:
            process.terminate()
            process.wait(timeout=60)
        print(f"{label:>22}: {result}", flush=True)
        results[label] = dict(requests=result.requests, failures=result.failures, seconds=round(result.seconds, 2),
                              requests_per_s=round(result.throughput, 2), p50_ms=round(result.percentile(50), 1),
                              p99_ms=round(result.percentile(99), 1))
    ratio = results["dynamic batching"]["requests_per_s"] / results["one request at a time"]["requests_per_s"]
    results["throughput_ratio"] = round(ratio, 2)
    print(f"throughput with dynamic batching: {ratio:.2f}x one request at a time")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
