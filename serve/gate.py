"""Bounded, off-loop execution of index calls, and the small response cache in front of it.

Why: a search is CPU work (query embedding, vector and BM25 lookups). Running it on
the event loop would stall every other request, and letting an unbounded number run
at once only makes all of them slow. So at most `max_inflight` index calls run, in
worker threads; one more is refused at once with 503 + Retry-After (load shedding)
rather than queued behind the others.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from serve.problems import OverloadedError

T = TypeVar("T")

CacheKey = tuple[str, str, int, str, str]


class SearchGate:
    """Admits up to `max_inflight` concurrent index calls; counts the ones it sheds.

    The counters are only touched on the event loop thread, so they need no lock.
    """

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.shed_total = 0
        self._limiter = anyio.CapacityLimiter(max_inflight)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inflight >= self.max_inflight:
            self.shed_total += 1
            raise OverloadedError(
                f"server busy: {self.inflight} searches running (limit {self.max_inflight}) — retry in a second"
            )
        self.inflight += 1
        try:
            # Not cancellable: a client hanging up must not free the slot while the thread still works.
            return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self._limiter)
        finally:
            self.inflight -= 1


class ResponseCache:
    """LRU of finished search responses keyed by snapshot and normalised request.

    The snapshot id is part of the key, so a hot reload invalidates every entry
    without a flush; old entries age out.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: CacheKey, value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
