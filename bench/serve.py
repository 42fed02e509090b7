"""Benchmark the HTTP server under closed-loop load and print one JSON report. Not a test.

What it measures, in one run, on one machine:
* in-process `Searcher.search` latency (the floor the server cannot beat);
* a real `serve.runner.run` server on loopback, driven by an httpx async client in
  this (separate) process at each concurrency level for a fixed duration, every
  request a distinct query so the response cache never answers;
* per level: QPS, p50/p95/p99 latency, errors and 503 sheds counted separately,
  the server's own mean latency (from its /metrics histogram, so client-side
  queueing is visible as the difference) and both processes' CPU use;
* /healthz round trip with the same client (what client + loopback cost alone);
* the server's peak RSS (psutil), and the targets below marked pass/fail.

The client honours Retry-After on 503, as a real client should. Client and server
share the machine: on a small box the client's CPU is part of what is measured.

Usage:
    python bench/serve.py                       # builds the fixture index in a temp folder (~40 s)
    python bench/serve.py --data-dir DIR        # an existing built index
    python bench/serve.py --duration 20 --concurrency 1,8,32 --out bench/results/serve.json
    python bench/serve.py --max-inflight 16     # shed beyond 16 admitted searches (small boxes)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ingest.settings import Settings, load_settings  # noqa: E402

DEFAULT_DURATION_S = 10.0
DEFAULT_CONCURRENCY = (1, 8, 32)
RESULTS_PER_QUERY = 10
WARMUP_REQUESTS = 30
IN_PROCESS_QUERIES = 400
BASELINE_REQUESTS = 300
SERVER_START_TIMEOUT_S = 60.0
RSS_SAMPLE_INTERVAL_S = 0.2
REQUEST_TIMEOUT_S = 30.0
QUERY_SEED = 20240611

TARGET_P50_C1_MS = 15.0
TARGET_HTTP_OVERHEAD_C1 = 0.25
TARGET_P99_C32_MS = 300.0
TARGET_RSS_MB = 250.0

# Words mixed into the judged questions to make every request a distinct cache key.
VARIANT_WORDS = [
    "database",
    "cache",
    "latency",
    "shard",
    "replica",
    "queue",
    "leader",
    "consensus",
    "partition",
    "throughput",
    "outage",
    "retry",
    "timeout",
    "backpressure",
    "index",
    "storage",
    "cluster",
    "failover",
    "tenant",
    "traffic",
    "load",
    "balancer",
    "hashing",
    "ring",
    "stream",
    "batch",
    "event",
    "log",
    "write",
    "read",
    "consistency",
    "availability",
    "budget",
    "error",
    "capacity",
    "scaling",
]


@dataclass
class Level:
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    shed_503: int
    errors: int
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_mean_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    error_samples: list[str]


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def query_variants() -> Iterator[str]:
    """An endless stream of distinct questions: each judged query plus two topic words, shuffled."""
    from tests.fixtures.relevance import judged_queries

    bases = [q.query for q in judged_queries()]
    combos = list(itertools.product(bases, VARIANT_WORDS, VARIANT_WORDS))
    random.Random(QUERY_SEED).shuffle(combos)
    for n, (base, first, second) in enumerate(itertools.cycle(combos)):
        lap = n // len(combos)
        yield f"{base} {first} {second}" + (f" {lap}" if lap else "")


def build_fixture_index(folder: Path) -> Settings:
    """The test suite's fixture corpus, built with the real model into `folder`."""
    from index.build import build_index
    from ingest.store import Store
    from tests.index_fixtures import fill_store

    settings = load_settings(data_dir=folder)
    with Store.open(settings.store_path) as store:
        fill_store(store)
        build_index(settings, store)
    return settings


def measure_in_process(settings: Settings, queries: Iterator[str]) -> dict[str, Any]:
    from index.search import Searcher

    searcher = Searcher.open(settings)
    try:
        for _ in range(WARMUP_REQUESTS):
            searcher.search(next(queries), k=RESULTS_PER_QUERY)
        timings = []
        for _ in range(IN_PROCESS_QUERIES):
            started = time.perf_counter()
            searcher.search(next(queries), k=RESULTS_PER_QUERY)
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        searcher.close()
    timings.sort()
    return {
        "queries": len(timings),
        "p50_ms": round(percentile(timings, 50), 3),
        "p95_ms": round(percentile(timings, 95), 3),
        "p99_ms": round(percentile(timings, 99), 3),
        "mean_ms": round(statistics.fmean(timings), 3),
    }


@contextmanager
def running_server(settings: Settings, port: int, extra_env: dict[str, str]) -> Iterator[tuple[str, psutil.Process]]:
    """`serve.runner.run` in a subprocess, as a user would start it; always stopped."""
    code = (
        "from ingest.settings import load_settings; from serve.runner import run; "
        f"run(load_settings(), host='127.0.0.1', port={port}, workers=1, log_level='warning')"
    )
    env = {**os.environ, "LINKLENS_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(REPO_ROOT), **extra_env}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.1)
        yield base_url, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RssSampler:
    """Peak resident memory of the server (and any children) while load runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        procs = [self.process, *self.process.children(recursive=True)]
        self.peak_bytes = max(self.peak_bytes, sum(p.memory_info().rss for p in procs))

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


SEARCH_SERIES = 'route="/search",status="200"}'


def server_search_totals(base_url: str) -> tuple[float, float]:
    """(seconds, count) the server's own histogram recorded for successful searches so far."""
    text = httpx.get(f"{base_url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    total = count = 0.0
    for line in text.splitlines():
        if SEARCH_SERIES in line and line.startswith("linklens_http_request_duration_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif SEARCH_SERIES in line and line.startswith("linklens_http_request_duration_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return total, count


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def closed_loop(
    base_url: str, server: psutil.Process, concurrency: int, duration_s: float, queries: Iterator[str]
) -> Level:
    """`concurrency` clients, each sending its next request as soon as the previous one is answered."""
    latencies: list[float] = []
    counts = {"ok": 0, "shed": 0, "errors": 0}
    samples: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(WARMUP_REQUESTS):
            await client.get("/search", params={"q": next(queries), "k": RESULTS_PER_QUERY})
        seconds_before, count_before = server_search_totals(base_url)
        this_process = psutil.Process()
        cpu_before = (cpu_seconds(server), cpu_seconds(this_process))
        deadline = time.perf_counter() + duration_s

        async def user() -> None:
            while time.perf_counter() < deadline:
                params: dict[str, str | int] = {"q": next(queries), "k": RESULTS_PER_QUERY}
                started = time.perf_counter()
                try:
                    response = await client.get("/search", params=params)
                except httpx.HTTPError as exc:
                    counts["errors"] += 1
                    samples.append(repr(exc)[:200])
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
                if response.status_code == 200:
                    counts["ok"] += 1
                    latencies.append(elapsed_ms)
                elif response.status_code == 503:
                    counts["shed"] += 1
                    # A well-behaved client backs off as told instead of hammering a shedding server.
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                else:
                    counts["errors"] += 1
                    samples.append(f"{response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = (cpu_seconds(server), cpu_seconds(this_process))
    seconds_after, count_after = server_search_totals(base_url)
    server_mean_ms = 1000 * (seconds_after - seconds_before) / max(1.0, count_after - count_before)
    latencies.sort()
    total = counts["ok"] + counts["shed"] + counts["errors"]
    return Level(
        concurrency=concurrency,
        duration_s=round(elapsed, 2),
        requests=total,
        ok=counts["ok"],
        shed_503=counts["shed"],
        errors=counts["errors"],
        qps=round(counts["ok"] / elapsed, 1),
        p50_ms=round(percentile(latencies, 50), 2),
        p95_ms=round(percentile(latencies, 95), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(latencies[-1], 2) if latencies else float("nan"),
        server_mean_ms=round(server_mean_ms, 2),
        server_cpu_pct=round(100 * (cpu_after[0] - cpu_before[0]) / elapsed, 1),
        client_cpu_pct=round(100 * (cpu_after[1] - cpu_before[1]) / elapsed, 1),
        error_samples=samples[:5],
    )


async def baseline_rtt_ms(base_url: str) -> float:
    """p50 of /healthz with the same client: what the client and loopback cost before any search."""
    timings = []
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(WARMUP_REQUESTS + BASELINE_REQUESTS):
            started = time.perf_counter()
            await client.get("/healthz")
            timings.append((time.perf_counter() - started) * 1000)
    return round(percentile(sorted(timings[WARMUP_REQUESTS:]), 50), 3)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def judge(in_process: dict[str, Any], levels: list[Level], rss_mb: float, rtt_ms: float) -> dict[str, Any]:
    by_c = {level.concurrency: level for level in levels}
    targets: dict[str, Any] = {
        "server_rss_mb": {"target": TARGET_RSS_MB, "value": rss_mb, "ok": rss_mb <= TARGET_RSS_MB}
    }
    if 1 in by_c:
        p50 = by_c[1].p50_ms
        overhead = (p50 - in_process["p50_ms"]) / in_process["p50_ms"]
        targets["p50_ms_at_c1"] = {"target": TARGET_P50_C1_MS, "value": p50, "ok": p50 <= TARGET_P50_C1_MS}
        targets["http_overhead_at_c1"] = {
            "target": TARGET_HTTP_OVERHEAD_C1,
            "value": round(overhead, 3),
            "ok": overhead <= TARGET_HTTP_OVERHEAD_C1,
            "definition": "(HTTP p50 at c=1 - in-process p50) / in-process p50",
            "client_and_loopback_ms": rtt_ms,
            "server_side_overhead": round((by_c[1].server_mean_ms - in_process["mean_ms"]) / in_process["mean_ms"], 3),
        }
    if 32 in by_c:
        level = by_c[32]
        targets["p99_ms_at_c32"] = {
            "target": TARGET_P99_C32_MS,
            "value": level.p99_ms,
            "ok": level.p99_ms <= TARGET_P99_C32_MS,
        }
        targets["errors_at_c32"] = {
            "target": 0,
            "value": level.errors,
            "ok": level.errors == 0,
            "shed_503": level.shed_503,
        }
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a data folder with a built index (default: build the fixture)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds per concurrency level")
    parser.add_argument("--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)), help="e.g. 1,8,32")
    parser.add_argument("--max-inflight", type=int, help="the server's LINKLENS_MAX_INFLIGHT (default: its setting)")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    levels_wanted = [int(c) for c in args.concurrency.split(",") if c.strip()]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="linklens-bench-") as tmp:
        if args.data_dir is not None:
            settings = load_settings(data_dir=args.data_dir)
        else:
            print("building the fixture index…", file=sys.stderr)
            settings = build_fixture_index(Path(tmp))
        queries = query_variants()
        in_process = measure_in_process(settings, queries)
        levels = []
        extra_env = {"LINKLENS_MAX_INFLIGHT": str(args.max_inflight)} if args.max_inflight else {}
        server = running_server(settings, free_port(), extra_env)
        with server as (base_url, process), RssSampler(process) as rss:
            rtt_ms = asyncio.run(baseline_rtt_ms(base_url))
            for concurrency in levels_wanted:
                print(f"c={concurrency} for {args.duration:.0f} s…", file=sys.stderr)
                levels.append(asyncio.run(closed_loop(base_url, process, concurrency, args.duration, queries)))
        rss_mb = round(rss.peak_bytes / 2**20, 1)

    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "index": str(settings.data_dir) if args.data_dir else "fixture (tests/fixtures/articles.json)",
        "in_process_search": in_process,
        "http": [asdict(level) for level in levels],
        "server_max_inflight": args.max_inflight or load_settings().max_inflight,
        "server_peak_rss_mb": rss_mb,
        "healthz_rtt_ms_at_c1": rtt_ms,
        "targets": judge(in_process, levels, rss_mb, rtt_ms),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
