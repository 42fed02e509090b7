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
    unreachable: tuple[str, str] | None = None  # (failure kind, reason) once the host could not be reached
    min_delay_s: float | None = None  # the host's own Crawl-delay, when longer than ours


# After this many distinct hosts in a row cannot be reached (DNS, refused, connect timeout) with not a
# single answer from anyone in between, the network is taken to be down: the rest of the crawl stops
# trying, and links that failed that way stay pending for the next run.
NETWORK_DOWN_AFTER_HOSTS = 12


class HostGate:
    """Hands out the right to send one request to a host, honouring both limits.

    It also remembers hosts that cannot be resolved or reached at all, so the
    other links on a dead host fail at once instead of each waiting its turn;
    and, as a circuit breaker for the whole crawl, notices when hosts stop
    answering altogether (no network from the start, or an outage midway), so a
    600-link crawl without network ends in seconds. Once open it stays open for
    the crawl: what was not tried stays pending for the next run.
    """

    def __init__(self, per_host: int, min_delay_s: float) -> None:
        self._per_host = per_host
        self._min_delay_s = min_delay_s
        self._hosts: dict[str, _HostState] = {}
        self._network_seen = False
        self._failing_since_answer: set[str] = set()
        self._down = False
        self.last_answered_url: str | None = None

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
                # a loop: the request before may have gone out later than its slot was taken (see `sending`)
                while (wait := state.next_start - time.monotonic()) > 0 and state.unreachable is None:
                    await asyncio.sleep(wait)  # no politeness owed to a host that is not there
                state.next_start = time.monotonic() + (state.min_delay_s or self._min_delay_s)
            yield

    def sending(self, host: str) -> None:
        """A request to `host` is going out now: the delay counts from here, not from when its slot was taken.

        Between the two lie connecting (DNS, TCP, TLS) and a busy event loop; without this, two
        requests could reach the server closer together than the delay promises.
        """
        state = self._state(host)
        state.next_start = max(state.next_start, time.monotonic() + (state.min_delay_s or self._min_delay_s))

    def set_min_delay(self, host: str, delay_s: float) -> None:
        """A host asked for a slower pace (robots.txt Crawl-delay); never faster than our own default."""
        self._state(host).min_delay_s = max(delay_s, self._min_delay_s)

    def push_back(self, host: str, delay_s: float) -> None:
        """A host told us to slow down (429/503 with Retry-After): no one starts before then."""
        state = self._state(host)
        state.next_start = max(state.next_start, time.monotonic() + delay_s)

    def mark_unreachable(self, host: str, kind: str, reason: str) -> None:
        """`host` could not be reached (`kind` says how): its other links fail at once with the same reason."""
        self._state(host).unreachable = (kind, reason)
        self._failing_since_answer.add(host)
        if len(self._failing_since_answer) >= NETWORK_DOWN_AFTER_HOSTS:
            self._down = True

    def mark_network_seen(self, url: str) -> None:
        """`url` answered: the network works, so connection failures are about their hosts only."""
        self._network_seen = True
        self._failing_since_answer.clear()
        self.last_answered_url = url

    @property
    def network_seen(self) -> bool:
        """Whether any host answered during this crawl (evidence that failures elsewhere are theirs)."""
        return self._network_seen

    @property
    def network_down(self) -> bool:
        return self._down

    def unreachable(self, host: str) -> tuple[str, str] | None:
        state = self._hosts.get(host)
        return state.unreachable if state else None

    def forget_unreachable(self) -> None:
        """Before the second try of unreachable links: every host gets resolved and connected to afresh."""
        for state in self._hosts.values():
            state.unreachable = None
