"""One small HTTP connection pool per origin, the least recently used idle ones closed.

Why one pool per origin rather than one big client: httpcore's pool scans every connection it
holds on each request and response (measured: most of the crawler's CPU with 12 hosts and 32
pooled connections). The politeness gate already caps requests per host, so a per-origin pool of
that size never waits and stays O(1) per request.

Why LRU-closed: a list with thousands of hosts would otherwise keep a pool (and its keep-alive
sockets) for every host it ever met, and run out of file descriptors under `ulimit -n 1024`. At
most `max_host_pools` pools stay open; beyond that the least recently used pool with no request in
flight is closed when a new one is opened. A pool in use is never closed under its request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ingest import address_policy
from ingest.settings import Settings

ACCEPT = "text/html,application/xhtml+xml,application/pdf;q=0.9,text/plain;q=0.8,*/*;q=0.5"
# What we ask for, and so what we can decode; anything else a server sends is fetched again as identity.
ACCEPT_ENCODING = "gzip, deflate"


@dataclass
class _Pool:
    client: httpx.AsyncClient
    in_use: int = 0


def origin_key(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


class HostClients:
    """Per-origin `httpx.AsyncClient`s sharing one TLS context; use as `async with`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tls = httpx.create_ssl_context()
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.request_timeout_s,
        )
        # + 1: robots.txt or an archive lookup may run beside the page requests
        size = settings.per_host_concurrency + 1
        self._limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self.closed_pools = 0  # for tests and metrics: how many idle pools the LRU has closed

    @property
    def open_pools(self) -> int:
        return len(self._pools)

    @asynccontextmanager
    async def lease(self, url: httpx.URL) -> AsyncIterator[httpx.AsyncClient]:
        """The client for `url`'s origin, held open for as long as the caller uses it."""
        key = origin_key(url) + address_policy.pool_key()  # keep-alive never crosses from trusted to untrusted work
        pool = self._pools.get(key)
        if pool is None:
            await self._close_idle(keep=self._settings.max_host_pools - 1)
            pool = self._pools[key] = _Pool(self._new_client())
        self._pools.move_to_end(key)
        pool.in_use += 1
        try:
            yield pool.client
        finally:
            pool.in_use -= 1

    def fresh(self) -> httpx.AsyncClient:
        """A client of its own, with no pooled connection: what it fetches needs DNS and TCP to work now."""
        return self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        # Every connection goes through the address policy (ingest/address_policy.py), checked at connect time.
        transport = address_policy.guard(httpx.AsyncHTTPTransport(verify=self._tls, limits=self._limits,
                                                                  trust_env=False))
        return httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            limits=self._limits,
            verify=self._tls,
            follow_redirects=False,
            headers={"User-Agent": self._settings.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
            trust_env=False,
        )

    async def _close_idle(self, keep: int) -> None:
        """Close least recently used idle pools until at most `keep` remain (busy ones are skipped)."""
        while len(self._pools) > keep:
            victim = next((key for key, pool in self._pools.items() if pool.in_use == 0), None)
            if victim is None:
                return  # every pool has a request in flight: bounded by the crawl's concurrency
            pool = self._pools.pop(victim)
            self.closed_pools += 1
            await pool.client.aclose()

    async def __aenter__(self) -> HostClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pool in self._pools.values():
            await pool.client.aclose()
        self._pools.clear()
