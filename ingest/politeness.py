"""Per-host politeness: a concurrency cap and a minimum delay between request starts.

Why per host: the global limit protects us, the per-host limit protects them. A
list like awesome-scalability has dozens of links to the same blog; without this
gate a crawl would open 16 connections to one small server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _HostState:
    slots: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_start: float = 0.0
    unreachable: str | None = None
    min_delay_s: float | None = None  # the host's own Crawl-delay, when longer than ours


# After this many distinct hosts fail to resolve with not a single answer from anyone,
# the network is taken to be down: the rest of the crawl stops trying.
NETWORK_DOWN_AFTER_HOSTS = 12


class HostGate:
    """Hands out the right to send one request to a host, honouring both limits.

    It also remembers hosts that cannot be resolved or reached at all, so the
    other links on a dead host fail at once instead of each waiting its turn;
    and, as a circuit breaker for the whole crawl, notices when no host at all
    can be resolved (no network), so a 600-link crawl ends in seconds.
    """

    def __init__(self, per_host: int, min_delay_s: float) -> None:
        self._per_host = per_host
        self._min_delay_s = min_delay_s
        self._hosts: dict[str, _HostState] = {}
        self._network_seen = False
        self._unresolved_hosts = 0

    def _state(self, host: str) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _HostState(asyncio.Semaphore(self._per_host))
        return state

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        state = self._state(host)
        async with state.slots:
            async with state.lock:
                wait = state.next_start - time.monotonic()
                if wait > 0 and state.unreachable is None:  # no politeness owed to a host that is not there
                    await asyncio.sleep(wait)
                state.next_start = time.monotonic() + (state.min_delay_s or self._min_delay_s)
            yield

    def set_min_delay(self, host: str, delay_s: float) -> None:
        """A host asked for a slower pace (robots.txt Crawl-delay); never faster than our own default."""
        self._state(host).min_delay_s = max(delay_s, self._min_delay_s)

    def push_back(self, host: str, delay_s: float) -> None:
        """A host told us to slow down (429/503 with Retry-After): no one starts before then."""
        state = self._state(host)
        state.next_start = max(state.next_start, time.monotonic() + delay_s)

    def mark_unreachable(self, host: str, reason: str) -> None:
        state = self._state(host)
        if state.unreachable is None:
            self._unresolved_hosts += 1
        state.unreachable = reason

    def mark_network_seen(self) -> None:
        """Some host answered: the network works, so DNS failures are about their hosts only."""
        self._network_seen = True

    @property
    def network_down(self) -> bool:
        return not self._network_seen and self._unresolved_hosts >= NETWORK_DOWN_AFTER_HOSTS

    def unreachable(self, host: str) -> str | None:
        state = self._hosts.get(host)
        return state.unreachable if state else None
