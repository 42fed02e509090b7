"""Prometheus metrics for one app: request counts/latency by route template, index and gate state.

Why a registry per app (not prometheus_client's global one): two apps in one
process (tests, or a future multi-index server) must not share or clash over
counters. Index and gate numbers are read at scrape time by a collector, so they
can never be stale after a hot reload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.gate import ResponseCache, SearchGate
from serve.live import LiveIndex

UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# Seconds; dense at the low end where searches live, up to the 300 ms p99 target and beyond.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
# The index's stats() keys exported as gauges: name in stats -> metric suffix.
INDEX_STAT_GAUGES = {"articles": "articles", "passages": "passages"}


class ServerMetrics:
    """The app's registry and the HTTP metrics the middleware records into."""

    def __init__(self, live: LiveIndex, gate: SearchGate, cache: ResponseCache) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "linklens_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "linklens_http_request_duration_seconds",
            "Time from request start to response end, by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(live, gate, cache))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Index and gate state, read live at every scrape."""

    def __init__(self, live: LiveIndex, gate: SearchGate, cache: ResponseCache) -> None:
        self._live = live
        self._gate = gate
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        searcher = self._live.searcher
        yield GaugeMetricFamily(
            "linklens_index_loaded", "1 when a snapshot is loaded.", value=int(searcher is not None)
        )
        if searcher is not None:
            stats = searcher.stats()
            for key, suffix in INDEX_STAT_GAUGES.items():
                if isinstance(stats.get(key), int | float):
                    yield GaugeMetricFamily(
                        f"linklens_index_{suffix}", f"{key} in the served snapshot.", value=stats[key]
                    )
            yield InfoMetricFamily(
                "linklens_index_snapshot", "The served snapshot.", value={"snapshot_id": str(searcher.snapshot_id)}
            )
        yield GaugeMetricFamily(
            "linklens_search_inflight", "Index calls admitted: running or queued.", value=self._gate.inflight
        )
        yield GaugeMetricFamily("linklens_search_max_inflight", "Admission limit.", value=self._gate.max_inflight)
        yield GaugeMetricFamily("linklens_search_threads", "Index calls run at once.", value=self._gate.threads)
        yield CounterMetricFamily(
            "linklens_search_shed", "Requests refused with 503 at the limit.", value=self._gate.shed_total
        )
        yield CounterMetricFamily(
            "linklens_search_cache_hits", "Search responses served from cache.", value=self._cache.hits
        )
        yield CounterMetricFamily("linklens_search_cache_misses", "Searches that ran.", value=self._cache.misses)
        yield GaugeMetricFamily("linklens_search_cache_entries", "Responses cached now.", value=len(self._cache))


class MetricsMiddleware:
    """Pure ASGI middleware: times every HTTP request and labels it with its route template.

    Labels use the route's path template (`/articles/{article_id}`), never the raw
    path, so label cardinality stays bounded whatever clients send.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            method = scope.get("method", "")
            labels = (method if method in KNOWN_METHODS else "OTHER", template, str(status))
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
