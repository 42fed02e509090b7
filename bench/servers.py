"""What bench/serve.py measures a server with: start it, load it, read its memory. Not a test.

Every server is a real `serve.runner.run` subprocess on a loopback address and an
OS-chosen port, started as `linklens serve` starts it, and always stopped.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 300.0
READY_POLL_S = 0.02
RSS_SAMPLE_INTERVAL_S = 0.2
REQUEST_TIMEOUT_S = 30.0
RESULTS_PER_QUERY = 10
WARMUP_REQUESTS = 30
SEARCH_SERIES = {"method": "GET", "route": "/search", "status": "200"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return float(s.value)
    return None


@dataclass
class Server:
    base_url: str
    process: psutil.Process
    workers: int
    ready_s: float

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=REQUEST_TIMEOUT_S).text

    def processes(self) -> list[psutil.Process]:
        """The runner and its workers (uvicorn's supervisor is the runner process itself)."""
        return [self.process, *self.process.children(recursive=True)]


@contextmanager
def running_server(data_dir: Path, workers: int = 1, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """`serve.runner.run` in a subprocess; ready when every worker has its snapshot loaded.

    `ready_s` runs from the process start (imports included, as an operator sees it)
    to the moment every worker answers with the snapshot loaded.
    """
    port = free_port()
    code = (
        "from ingest.settings import load_settings; from serve.runner import run; "
        f"run(load_settings(), host='127.0.0.1', port={port}, workers={workers}, log_level='warning')"
    )
    env = {
        **os.environ,
        "LINKLENS_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO_ROOT),
        **(extra_env or {}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the runner makes a fresh one per run
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if _ready(base_url, workers):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {SERVER_START_TIMEOUT_S} s")
            time.sleep(READY_POLL_S)
        yield Server(base_url, psutil.Process(process.pid), workers, round(time.perf_counter() - started, 3))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(base_url: str, workers: int) -> bool:
    """One worker: /readyz says so. Several: the metrics, which add up every worker, say all are loaded."""
    if workers == 1:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    text = httpx.get(f"{base_url}/metrics", timeout=2).text
    return metric(text, "linklens_workers") == workers and metric(text, "linklens_index_loaded") == 1.0


def memory_mb(processes: list[psutil.Process]) -> dict[str, float]:
    """Summed resident (RSS), proportional (PSS) and unique (USS) memory of `processes`.

    RSS counts a page shared by N processes N times (a memory-mapped index read by
    four workers shows up four times); PSS charges each process 1/N of it, so the
    PSS sum is what the box really spends.
    """
    rss = pss = uss = 0
    for p in processes:
        full = p.memory_full_info()
        rss += full.rss
        pss += getattr(full, "pss", full.rss)
        uss += full.uss
    return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1), "uss_mb": round(uss / 2**20, 1)}


class RssSampler:
    """Peak summed RSS of a server's processes while load runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, sum(p.memory_info().rss for p in self.server.processes()))

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class ThinClient:
    """One keep-alive HTTP/1.1 connection (stdlib `http.client`): the least a client can add to a request."""

    def __init__(self, base_url: str) -> None:
        address = urllib.parse.urlsplit(base_url)
        self._connection = http.client.HTTPConnection(address.hostname, address.port, timeout=REQUEST_TIMEOUT_S)

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes, float]:
        """(status, body, the server's own time in ms from its Server-Timing header)."""
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        self._connection.request("GET", target)
        response = self._connection.getresponse()
        body = response.read()
        timing = response.getheader("server-timing") or "app;dur=nan"
        return response.status, body, float(timing.partition("dur=")[2] or "nan")

    def close(self) -> None:
        self._connection.close()


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


def concurrency_one(server: Server, searcher: Any, queries: list[str]) -> dict[str, Any]:
    """HTTP vs in-process latency at concurrency 1 on the same queries, interleaved.

    Each query runs once in this process (`Searcher.search`, the floor) and once
    over HTTP, in alternating order, so load from the rest of the machine hits
    both sides alike. Every query is new to the server: its cache never answers.
    Two clients: the thin stdlib one (what the server adds) and httpx (what a
    typical Python client adds on top). /healthz with the thin client shows what
    loopback and the HTTP stack cost with no search at all. The server's own split
    comes with each answer: `Server-Timing` (the app's time) and `took_ms` (the search's).
    """
    thin = ThinClient(server.base_url)
    rich = httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S)
    try:
        for i in range(WARMUP_REQUESTS):
            thin.get("/search", {"q": f"warm up {i}", "k": RESULTS_PER_QUERY})
            rich.get("/search", params={"q": f"warm up again {i}", "k": RESULTS_PER_QUERY})
            searcher.search(f"warm up {i}", k=RESULTS_PER_QUERY)
        before = _search_totals(server)
        in_process, thin_http, healthz, server_app, server_search = [], [], [], [], []
        for n, q in enumerate(queries):
            steps = [("in", q), ("http", q)] if n % 2 == 0 else [("http", q), ("in", q)]
            for kind, text in steps:
                started = time.perf_counter()
                if kind == "in":
                    searcher.search(text, k=RESULTS_PER_QUERY)
                    in_process.append(time.perf_counter() - started)
                else:
                    status, body, app_ms = thin.get("/search", {"q": text, "k": RESULTS_PER_QUERY})
                    thin_http.append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"/search answered {status} at concurrency 1")
                    server_app.append(app_ms / 1000)
                    server_search.append(json.loads(body)["took_ms"] / 1000)
            started = time.perf_counter()
            thin.get("/healthz")
            healthz.append(time.perf_counter() - started)
        after = _search_totals(server)
        rich_http, rich_in = [], []
        for q in queries:  # the same questions again, varied so the cache stays out of it
            text = q + " again"
            started = time.perf_counter()
            rich.get("/search", params={"q": text, "k": RESULTS_PER_QUERY})
            rich_http.append(time.perf_counter() - started)
            started = time.perf_counter()
            searcher.search(text, k=RESULTS_PER_QUERY)
            rich_in.append(time.perf_counter() - started)
    finally:
        thin.close()
        rich.close()
    server_mean_ms = 1000 * (after[0] - before[0]) / max(1.0, after[1] - before[1])
    return {
        "queries": len(queries),
        "in_process_p50_ms": _ms(in_process),
        "http_p50_ms": _ms(thin_http),
        "overhead_ms": round(_ms(thin_http) - _ms(in_process), 3),
        "healthz_p50_ms": _ms(healthz),
        "server_app_p50_ms": _ms(server_app),
        "server_search_p50_ms": _ms(server_search),
        "server_mean_ms": round(server_mean_ms, 3),
        "in_process_mean_ms": round(1000 * statistics.fmean(in_process), 3),
        "httpx_p50_ms": _ms(rich_http),
        "httpx_overhead_ms": round(_ms(rich_http) - _ms(rich_in), 3),
    }


def _search_totals(server: Server) -> tuple[float, float]:
    """(seconds, count) the server's histogram holds for successful searches."""
    text = server.metrics()
    seconds = metric(text, "linklens_http_request_duration_seconds_sum", SEARCH_SERIES) or 0.0
    count = metric(text, "linklens_http_request_duration_seconds_count", SEARCH_SERIES) or 0.0
    return seconds, count


def closed_loop(server: Server, concurrency: int, duration_s: float, queries: Iterator[str]) -> dict[str, Any]:
    return asyncio.run(_closed_loop(server, concurrency, duration_s, queries))


async def _closed_loop(server: Server, concurrency: int, duration_s: float, queries: Iterator[str]) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request as soon as the previous one is answered.

    The client honours Retry-After on 503, as a real client should. Client and
    server share the machine: on a small box the client's CPU is part of what is measured.
    """
    latencies: list[float] = []
    counts = {"ok": 0, "shed": 0, "errors": 0}
    samples: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(WARMUP_REQUESTS):
            await client.get("/search", params={"q": next(queries), "k": RESULTS_PER_QUERY})
        shed_before = metric(server.metrics(), "linklens_search_shed_total") or 0.0
        cpu_before = sum(_cpu_s(p) for p in server.processes())
        deadline = time.perf_counter() + duration_s

        async def user() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get("/search", params={"q": next(queries), "k": RESULTS_PER_QUERY})
                except httpx.HTTPError as exc:
                    counts["errors"] += 1
                    samples.append(repr(exc)[:200])
                    continue
                if response.status_code == 200:
                    counts["ok"] += 1
                    latencies.append((time.perf_counter() - started) * 1000)
                elif response.status_code == 503:
                    counts["shed"] += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                else:
                    counts["errors"] += 1
                    samples.append(f"{response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = sum(_cpu_s(p) for p in server.processes())
    shed_after = metric(server.metrics(), "linklens_search_shed_total") or 0.0
    latencies.sort()
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "ok": counts["ok"],
        "shed_503": counts["shed"],
        "shed_counted_by_server": int(shed_after - shed_before),
        "errors": counts["errors"],
        "qps": round(counts["ok"] / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else float("nan"),
        "server_cpu_pct": round(100 * (cpu_after - cpu_before) / elapsed, 1),
        "error_samples": samples[:5],
    }


def _cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)
