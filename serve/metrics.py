"""Prometheus metrics: request counts/latency by route template, index and gate state, across workers.

Two modes, chosen by the environment when the process starts:
* one process (`linklens serve`, tests): a registry per app, so two apps in one
  process (tests) never share or clash over counters;
* N worker processes (`linklens serve --workers N`): prometheus-client's
  multiprocess mode. The runner points `PROMETHEUS_MULTIPROC_DIR` at a folder of
  its own, emptied at start, before any worker imports prometheus-client; every
  worker writes its values to memory-mapped files there, and whichever worker
  answers a scrape adds up every worker's files. A scrape therefore shows the
  whole server, not the one worker the kernel handed the connection to.

State (index, gate, cache) is pushed into gauges and counters as it changes,
never read at scrape time: in multiprocess mode the scraped worker cannot see its
siblings' memory. How each gauge adds up across live workers (`multiprocess_mode`)
is stated next to it; gauges of a worker that exits are dropped
(`mark_process_dead`: at its shutdown, and at every scrape for workers that died
without one).
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from index.search import Searcher

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# Seconds; dense at the low end where searches live, up to the 300 ms p99 target and beyond.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The shared metrics folder when this process is one of several workers, else None.

    Refuses a folder set after prometheus-client was imported: values would then
    silently stay in this process and every scrape would show one worker's share.
    """
    folder = os.environ.get(MULTIPROC_DIR_ENV)
    if not folder:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            f"{MULTIPROC_DIR_ENV} was set after prometheus_client was imported — set it before the server starts"
        )
    return Path(folder)


class ServerMetrics:
    """The metrics one app records; `render()` is what `/metrics` answers."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        # In multiprocess mode values live in the shared files, not in a registry of ours.
        registry = None if folder is not None else CollectorRegistry()
        self._registry = registry
        self.requests = Counter(
            "linklens_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "linklens_http_request_duration_seconds",
            "Time from request start to response end, by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.workers = Gauge(
            "linklens_workers", "Worker processes serving (summed over workers).", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.index_loaded = Gauge(
            "linklens_index_loaded", "1 when every worker has a snapshot loaded (the least over workers).",
            registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.index_passages = Gauge(
            "linklens_index_passages", "Passages in the served snapshot (the one most recently loaded).",
            registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.index_articles = Gauge(
            "linklens_index_articles", "Articles in the served snapshot (the one most recently loaded).",
            registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.snapshot_info = Gauge(
            "linklens_index_snapshot_info", "1 for each snapshot some worker serves, 0 once none does.",
            ["snapshot_id"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.snapshot_workers = Gauge(
            "linklens_index_snapshot_workers", "Workers serving each snapshot (summed over workers).",
            ["snapshot_id"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.inflight = Gauge(
            "linklens_search_inflight", "Index calls admitted, running or queued (summed over workers).",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.max_inflight = Gauge(
            "linklens_search_max_inflight",
            "Admission limit of each worker (LINKLENS_MAX_INFLIGHT); the server admits this × linklens_workers.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.threads = Gauge(
            "linklens_search_threads", "Index calls each worker runs at once.", registry=registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.shed = Counter("linklens_search_shed", "Requests refused with 503 at the limit.", registry=registry)
        self.cache_hits = Counter("linklens_search_cache_hits", "Search responses served from cache.",
                                  registry=registry)  # fmt: skip
        self.cache_misses = Counter("linklens_search_cache_misses", "Searches that ran.", registry=registry)
        self.cache_entries = Gauge(
            "linklens_search_cache_entries", "Responses cached now (summed over workers).", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.snapshot_load_failures = Counter(
            "linklens_index_snapshot_load_failures", "Snapshots that failed to load and were skipped.",
            registry=registry,
        )  # fmt: skip
        self._served: str | None = None
        self.workers.set(1)
        self.index_loaded.set(0)

    # -- what the gate, the cache and the live index report ------------------------------------

    def gate_limits(self, max_inflight: int, threads: int) -> None:
        self.max_inflight.set(max_inflight)
        self.threads.set(threads)

    def inflight_changed(self, inflight: int) -> None:
        self.inflight.set(inflight)

    def request_shed(self) -> None:
        self.shed.inc()

    def cache_lookup(self, hit: bool, entries: int) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()
        self.cache_entries.set(entries)

    def serving(self, searcher: Searcher | None) -> None:
        """The worker now serves `searcher`'s snapshot (None: none loaded, or shutting down)."""
        snapshot_id = None if searcher is None else str(searcher.snapshot_id)
        if self._served is not None and self._served != snapshot_id:
            if self.folder is None:  # a snapshot no longer served leaves the exposition
                self.snapshot_info.remove(self._served)
                self.snapshot_workers.remove(self._served)
            else:  # multiprocess files cannot drop a label: 0 here, and `render` leaves out zeros
                self.snapshot_info.labels(self._served).set(0)
                self.snapshot_workers.labels(self._served).set(0)
        self._served = snapshot_id
        if searcher is None or snapshot_id is None:
            self.index_loaded.set(0)
            return
        stats: dict[str, Any] = searcher.stats()
        self.index_passages.set(float(stats.get("passages", 0)))
        self.index_articles.set(float(stats.get("articles", 0)))
        self.snapshot_info.labels(snapshot_id).set(1)
        self.snapshot_workers.labels(snapshot_id).set(1)
        self.index_loaded.set(1)

    def snapshot_refused(self, snapshot_id: str) -> None:
        """A snapshot failed to load and was skipped (reported once per snapshot)."""
        self.snapshot_load_failures.inc()

    # -- scrape and shutdown -------------------------------------------------------------------------

    def render(self) -> bytes:
        """Prometheus text exposition: this app's registry, or every worker's files added up."""
        if self.folder is None:
            assert self._registry is not None
            return generate_latest(self._registry)
        forget_dead_workers(self.folder)
        registry = CollectorRegistry()
        registry.register(ServedSnapshotsOnly(MultiProcessCollector(None, path=str(self.folder))))
        return generate_latest(registry)

    def close(self) -> None:
        """At worker shutdown: drop this worker's live gauges so the others' sums stay true."""
        if self.folder is not None:
            mark_process_dead(os.getpid(), str(self.folder))


class ServedSnapshotsOnly:
    """The workers' files added up, without the per-snapshot samples of snapshots no worker serves.

    prometheus-client cannot remove a label in multiprocess mode, so a worker that moves on sets its
    old snapshot's gauges to 0; left in, every build would add a label value that never goes away.
    """

    SNAPSHOT_FAMILIES = frozenset({"linklens_index_snapshot_info", "linklens_index_snapshot_workers"})

    def __init__(self, collector: MultiProcessCollector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        for family in self._collector.collect():
            if family.name in self.SNAPSHOT_FAMILIES:
                family.samples = [s for s in family.samples if s.value != 0]
            yield family


def forget_dead_workers(folder: Path) -> list[int]:
    """`mark_process_dead` for every worker whose live-gauge files remain but whose process is gone.

    A worker killed with SIGKILL never runs its shutdown; uvicorn starts a
    replacement, and without this its old gauges (inflight, workers) would count forever.
    """
    forgotten = []
    for path in glob.glob(str(folder / "gauge_live*.db")):
        found = _LIVE_GAUGE_FILE.search(path)
        if found is None:
            continue
        pid = int(found.group(1))
        if not _alive(pid):
            mark_process_dead(pid, str(folder))
            forgotten.append(pid)
    return forgotten


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class MetricsMiddleware:
    """Pure ASGI middleware: times every HTTP request and labels it with its route template.

    Labels use the route's path template (`/articles/{article_id}`), never the raw
    path, so label cardinality stays bounded whatever clients send. Every response
    also carries `Server-Timing: app;dur=<ms>` (W3C Server Timing), the time the app
    spent before answering: a client can tell server time from network and queueing.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope.get("method", "")
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # The app's own time so far (the body is rendered by now), for clients and bench/serve.py.
                app_ms = (time.perf_counter() - started) * 1000
                headers = [*message.get("headers", ()), (b"server-timing", f"app;dur={app_ms:.3f}".encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            labels = (method if method in KNOWN_METHODS else "OTHER", route_template(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, or `<unmatched>`.

    FastAPI sets `scope["route"]` for its API routes only; the docs routes and the
    static mount are found by matching the app's top-level routes' patterns.
    """
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    app = scope.get("app")
    path = scope.get("path", "")
    for candidate in getattr(app, "routes", ()):
        pattern = getattr(candidate, "path_regex", None)
        if pattern is not None and pattern.match(path):
            return str(candidate.path) or UNMATCHED_ROUTE
    return UNMATCHED_ROUTE
