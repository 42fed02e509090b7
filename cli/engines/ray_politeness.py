"""Politeness across a Ray cluster: one place decides when a host may be contacted, whatever unit or node asks.

A fetch unit runs the local crawler's machinery (`ingest.link_batch.fetch_batch`) with a
`HostGate`. Units are grouped by listed host, but the hosts a unit reaches are not only its own:
redirect targets (many blogs' domains redirect to one platform), their robots.txt and the web
archive are shared by every unit. So on Ray the unit's gate is a `ClusterHostGate`: the same
interface the fetcher already uses, whose per-host decisions (a slot, the delay between request
starts, a `Retry-After` push-back, a robots.txt `Crawl-delay`) are made by `HostGateActor`s,
async actors each holding an ordinary `HostGate` for a share of the hosts (by a stable hash of
the host name). What a unit learns about reachability (dead hosts, the network being down) stays
its own, as in the local crawler.

A slot is a lease: granted with a deadline (`HOST_LEASE_S`), renewed by its holder while the
request is in flight, released when it ends. A unit killed with its slots held (a dead node, a
cancelled task) stops renewing, and the actor takes its slots back at the deadline; a slot is
never lost for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ingest.politeness import HostGate

logger = logging.getLogger(__name__)

# A slot whose holder stopped renewing it (its unit died) is taken back this long after the last renewal.
HOST_LEASE_S = 30.0
# Holders renew their leases this often: three renewals can be late before a live lease expires.
LEASES_RENEWED_PER_TERM = 3
# One gate actor per this many CPUs of the cluster (at least one): each is an event loop answering every
# unit's requests for its hosts, about two thousand calls a second on one core.
CPUS_PER_GATE_SHARD = 16
# Calls one gate actor runs at once: every request waiting for a slot anywhere in the cluster is one.
MAX_WAITING_CALLS = 100_000
# Leases released before they were granted (the asker gave up) are remembered this long, then forgotten.
EARLY_RELEASES_KEPT = 10_000


@dataclass
class _Lease:
    host: str
    granted: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float = 0.0
    granted_at: float = 0.0


class HostGateActor:
    """Ray async actor: a `HostGate` for its share of the hosts, handing out its slots as leases.

    Every method is a coroutine, so thousands of units can wait for slots at once while the actor
    goes on granting, renewing and releasing them on one event loop.
    """

    def __init__(self, per_host: int, min_delay_s: float, lease_s: float = HOST_LEASE_S) -> None:
        self._gate = HostGate(per_host, min_delay_s)
        self._lease_s = lease_s
        self._leases: dict[str, _Lease] = {}
        self._released_early: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._holders: set[asyncio.Task[None]] = set()
        self.reclaimed = 0

    async def acquire(self, host: str, lease_id: str) -> float | None:
        """Wait for a slot at `host` (and its delay): when it was granted (`time.monotonic()` on the gate's node),
        or None if the asker released `lease_id` before it came."""
        if lease_id in self._released_early:
            del self._released_early[lease_id]
            return None
        lease = self._leases[lease_id] = _Lease(host)
        holder = asyncio.create_task(self._hold(lease_id, lease))
        self._holders.add(holder)
        holder.add_done_callback(self._holders.discard)
        await lease.granted.wait()
        return None if lease.released.is_set() else lease.granted_at

    async def _hold(self, lease_id: str, lease: _Lease) -> None:
        try:
            async with self._gate.slot(lease.host):
                lease.granted_at = time.monotonic()
                lease.deadline = lease.granted_at + self._lease_s
                lease.granted.set()
                while not lease.released.is_set():
                    left = lease.deadline - time.monotonic()
                    if left <= 0:
                        self.reclaimed += 1
                        logger.warning("a slot at %s was not renewed for %.0f s: taken back", lease.host,
                                       self._lease_s)
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lease.released.wait(), left)
        finally:
            lease.granted.set()
            self._leases.pop(lease_id, None)

    async def renew(self, lease_id: str) -> bool:
        """The holder of `lease_id` is still using its slot: the deadline moves on. False if it was taken back."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        lease.deadline = time.monotonic() + self._lease_s
        return True

    async def release(self, lease_id: str) -> None:
        """The request is done (or was never sent): the slot goes to the next asker."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.released.set()
            return
        # Not asked for yet (the release overtook its acquire) or already taken back: an acquire after this
        # one returns at once without a slot.
        self._released_early[lease_id] = None
        if len(self._released_early) > EARLY_RELEASES_KEPT:
            del self._released_early[next(iter(self._released_early))]

    async def sending(self, host: str) -> None:
        self._gate.sending(host)

    async def push_back(self, host: str, delay_s: float) -> None:
        self._gate.push_back(host, delay_s)

    async def set_min_delay(self, host: str, delay_s: float) -> None:
        self._gate.set_min_delay(host, delay_s)

    async def pace(self, host: str) -> tuple[float, float]:
        """The delay kept between request starts at `host` (ours, or its Crawl-delay when longer), and when the
        next may start (`time.monotonic()` on the gate's node)."""
        state = self._gate._state(host)
        return state.min_delay_s or self._gate._min_delay_s, state.next_start

    async def held(self) -> dict[str, int]:
        """Slots held now, by host (leases granted and not yet released or taken back)."""
        held: dict[str, int] = {}
        for lease in self._leases.values():
            if lease.granted.is_set() and not lease.released.is_set():
                held[lease.host] = held.get(lease.host, 0) + 1
        return held

    async def reclaimed_slots(self) -> int:
        return self.reclaimed


def gate_shards(cpus: float) -> int:
    """Gate actors for a cluster of `cpus` CPUs."""
    return max(1, int(cpus) // CPUS_PER_GATE_SHARD)


def start_host_gates(ray: Any, per_host: int, min_delay_s: float, shards: int,
                     lease_s: float = HOST_LEASE_S) -> list[Any]:
    """A crawl's gate actors (no CPU reserved: they only keep time and count slots)."""
    actor = ray.remote(num_cpus=0, max_concurrency=MAX_WAITING_CALLS)(HostGateActor)
    return [actor.remote(per_host, min_delay_s, lease_s) for _ in range(shards)]


def shard_of(host: str, shards: int) -> int:
    """The gate actor that decides for `host`: a hash stable across processes (Python's `hash` is not)."""
    return zlib.crc32(host.encode("utf-8", "surrogatepass")) % shards


class ClusterHostGate(HostGate):
    """A fetch unit's `HostGate` whose pacing is the cluster's: slots, delays, push-back and Crawl-delay go to
    the gate actor of each host; dead hosts and the network's state stay the unit's own, as locally."""

    def __init__(self, gates: list[Any], per_host: int, min_delay_s: float, lease_s: float = HOST_LEASE_S) -> None:
        super().__init__(per_host, min_delay_s)
        self._gates = gates
        self._renew_every_s = lease_s / LEASES_RENEWED_PER_TERM

    def _gate_of(self, host: str) -> Any:
        return self._gates[shard_of(host, len(self._gates))]

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        if self.unreachable(host) is not None:
            # The fetcher sends nothing to a host this unit found dead (it checks once it has the slot), and
            # its links must not each wait their turn to learn that, as locally.
            yield
            return
        gate = self._gate_of(host)
        lease_id = uuid.uuid4().hex
        try:
            await gate.acquire.remote(host, lease_id)
        except BaseException:  # cancelled while waiting: the slot, when it comes, goes back at once
            gate.release.remote(lease_id)
            raise
        renewing = asyncio.create_task(self._renew(gate, lease_id))
        try:
            yield
        finally:
            renewing.cancel()
            gate.release.remote(lease_id)

    async def _renew(self, gate: Any, lease_id: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every_s)
            await gate.renew.remote(lease_id)

    def sending(self, host: str) -> None:
        if self._min_delay_s > 0 or self._state(host).min_delay_s:  # with no delay to keep, there is nothing to move
            self._gate_of(host).sending.remote(host)

    def set_min_delay(self, host: str, delay_s: float) -> None:
        super().set_min_delay(host, delay_s)
        self._gate_of(host).set_min_delay.remote(host, delay_s)

    def push_back(self, host: str, delay_s: float) -> None:
        self._gate_of(host).push_back.remote(host, delay_s)
