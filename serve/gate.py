"""Bounded, off-loop execution of index calls, and the small response cache in front of it.

Why: a search is CPU work (query embedding, vector and BM25 lookups). Running it on
the event loop would stall every other request. Two limits apply:
* admission: at most `max_inflight` calls are admitted (running or queued); one more
  is refused at once with 503 + Retry-After (load shedding) instead of queueing
  without bound, so the latency of admitted requests stays bounded;
* execution: a small fixed pool of threads runs them, the rest wait in FIFO order
  without holding a thread. More threads than the CPU can feed do not finish
  sooner: about a third of a search holds the GIL, which the event loop also
  needs. On the 2-core bench box, 2 threads gave lower throughput and 4x the p99
  of 1 thread at 32 concurrent clients (bench/serve.py), hence half the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from serve.problems import OverloadedError

T = TypeVar("T")

CacheKey = tuple[str, str, int, tuple[str, ...], str, str]  # snapshot, query, k, section path, host, list


class GateObserver(Protocol):
    """What the gate reports as it changes (ServerMetrics records it; the gate works without one)."""

    def gate_limits(self, max_inflight: int, threads: int) -> None: ...
    def inflight_changed(self, inflight: int) -> None: ...
    def request_shed(self) -> None: ...


class CacheObserver(Protocol):
    def cache_lookup(self, hit: bool, entries: int) -> None: ...


class _Unobserved:
    def gate_limits(self, max_inflight: int, threads: int) -> None:
        pass

    def inflight_changed(self, inflight: int) -> None:
        pass

    def request_shed(self) -> None:
        pass

    def cache_lookup(self, hit: bool, entries: int) -> None:
        pass


UNOBSERVED = _Unobserved()


def core_count() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_search_threads() -> int:
    return max(1, core_count() // 2)


class SearchGate:
    """Admits up to `max_inflight` concurrent index calls, runs them on `threads` threads, counts sheds.

    `inflight` counts admitted calls, running or queued; a call leaves it when its
    thread finishes, even if the client hung up before, so the count never
    undercounts work the CPU is still doing. Counters are only touched on the event
    loop thread, so they need no lock.
    """

    def __init__(self, max_inflight: int, threads: int | None = None, observer: GateObserver = UNOBSERVED) -> None:
        self.max_inflight = max_inflight
        self.threads = max(1, min(max_inflight, threads or default_search_threads()))
        self.inflight = 0
        self.shed_total = 0
        self._observer = observer
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="linklens-search")
        observer.gate_limits(self.max_inflight, self.threads)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inflight >= self.max_inflight:
            self.shed_total += 1
            self._observer.request_shed()
            raise OverloadedError(
                f"server busy: {self.inflight} searches admitted (limit {self.max_inflight}) — retry in a second"
            )
        self.inflight += 1
        self._observer.inflight_changed(self.inflight)
        loop = asyncio.get_running_loop()
        work = self._executor.submit(fn, *args)
        # Released when the thread is done (or the queued call is dropped), not when the awaiting request is.
        work.add_done_callback(lambda _: _call_soon(loop, self._release))
        return await asyncio.wrap_future(work)

    def _release(self) -> None:
        self.inflight -= 1
        self._observer.inflight_changed(self.inflight)

    def close(self) -> None:
        """Drop queued calls and let running ones finish in the background (app shutdown)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed at shutdown: nothing is left to count
        loop.call_soon_threadsafe(callback)


class ResponseCache:
    """LRU of finished search responses keyed by snapshot and normalised request.

    The snapshot id is part of the key, so a hot reload invalidates every entry
    without a flush; old entries age out.
    """

    def __init__(self, size: int, observer: CacheObserver = UNOBSERVED) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._observer = observer
        self._entries: OrderedDict[CacheKey, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            self._observer.cache_lookup(False, len(self._entries))
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        self._observer.cache_lookup(True, len(self._entries))
        return entry

    def put(self, key: CacheKey, value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
