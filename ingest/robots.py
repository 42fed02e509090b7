"""robots.txt, fetched once per host and parsed with protego; its Crawl-delay slows that host's gate.

Policy for a robots.txt we cannot read: 4xx means "no rules" (allow), as every
major crawler does; a 5xx or network failure also allows, because the page fetch
that follows will meet the same trouble and record it honestly.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from protego import Protego

from ingest.fetcher import Fetcher
from ingest.models import FetchAttempt
from ingest.politeness import HostGate
from ingest.urls import host_of

logger = logging.getLogger(__name__)
ROBOTS_MAX_ATTEMPTS = 2
ROBOTS_MAX_BYTES = 512 * 1024
# A Crawl-delay above this is capped: a link list must finish within the day.
MAX_CRAWL_DELAY_S = 30.0


def origin_of(url: str) -> str:
    """scheme://netloc: robots.txt applies per origin, port included."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class RobotsCache:
    """Answers "may we fetch this URL?" with one robots.txt request per host."""

    def __init__(self, fetcher: Fetcher, user_agent: str, gate: HostGate) -> None:
        self._fetcher = fetcher
        self._agent = user_agent
        self._gate = gate
        self._rules: dict[str, Protego | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def allowed(self, url: str) -> bool:
        rules = await self._rules_for(url)
        return True if rules is None else bool(rules.can_fetch(url, self._agent))

    async def _rules_for(self, url: str) -> Protego | None:
        origin = origin_of(url)
        if origin in self._rules:
            return self._rules[origin]
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            if origin not in self._rules:
                self._rules[origin] = await self._fetch_rules(origin)
        return self._rules[origin]

    async def _fetch_rules(self, origin: str) -> Protego | None:
        attempts: list[FetchAttempt] = []
        result = await self._fetcher.fetch(origin + "/robots.txt", attempts, max_attempts=ROBOTS_MAX_ATTEMPTS)
        if result.body is None or not (200 <= (result.status or 0) < 300):
            logger.debug("no usable robots.txt for %s: %s", host_of(origin), result.reason)
            return None
        text = result.body.body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace")
        rules = Protego.parse(text)
        delay = rules.crawl_delay(self._agent)
        if delay:
            self._gate.set_min_delay(host_of(origin), min(float(delay), MAX_CRAWL_DELAY_S))
        return rules
