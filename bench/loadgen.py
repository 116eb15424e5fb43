"""A bounded load generator for the service (loopback only): N requests from C concurrent clients.
Used by bench/serve_load.py and the tests (pytest puts bench/ on the path)."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import httpx


@dataclass
class LoadResult:
    requests: int
    failures: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def __str__(self) -> str:
        return (f"{self.requests} requests, {self.failures} failed, {self.throughput:.1f} requests/s, "
                f"latency p50 {statistics.median(self.latencies_ms):.0f} ms, p99 {self.percentile(99):.0f} ms")


def run_load(base_url: str, sentences: list[str], n_requests: int = 500, clients: int = 16, beam: int = 4,
             timeout_s: float = 120.0) -> LoadResult:
    """Each client sends one sentence per request, in turn, until n_requests have been sent."""
    if not base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("load tests only target loopback addresses")
    counter = iter(range(n_requests))
    lock = threading.Lock()
    latencies: list[float] = []
    failures = [0]

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    response = http.post("/v1/translate", json={"text": [sentences[index % len(sentences)]], "beam": beam})
                    ok = response.status_code == 200 and len(response.json()["translations"]) == 1
                except httpx.HTTPError:
                    ok = False
                elapsed = 1000 * (time.perf_counter() - started)
                with lock:
                    latencies.append(elapsed)
                    failures[0] += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(n_requests, failures[0], time.perf_counter() - started, latencies)
