"""robots.txt per RFC 9309, fetched once per origin and parsed with protego.

What a robots.txt we cannot read means (RFC 9309 §2.3.1):
- 4xx ("unavailable"), or too many redirects: no rules, everything is allowed;
- 5xx, a broken or too slow answer ("unreachable"): the whole site is disallowed *for this
  crawl*; its links end `failed` with that reason, so `linklens crawl --retry-failed` tries them
  again later (rather than `blocked`, which says the site itself forbids us);
- the host cannot be reached at all (DNS, refused, connect timeout): the link fails the way its page
  fetch would have, so the crawler's rules for unreachable hosts (second try, `dead` only on
  lasting evidence, `pending` when the network is down) apply unchanged.
Its Crawl-delay slows that host's gate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from urllib.parse import urlsplit

from protego import Protego

from ingest.fetcher import CONNECTION_FAILURES, Failure, Fetcher, FetchResult
from ingest.models import FetchAttempt
from ingest.politeness import HostGate
from ingest.urls import host_of

logger = logging.getLogger(__name__)
ROBOTS_MAX_ATTEMPTS = 2
ROBOTS_MAX_BYTES = 512 * 1024
# A Crawl-delay above this is capped: a link list must finish within the day.
MAX_CRAWL_DELAY_S = 30.0
# Failures that make robots.txt "unavailable" (allow all) rather than "unreachable" (disallow all).
UNAVAILABLE_FAILURES = frozenset({Failure.GONE, Failure.HTTP, Failure.REDIRECT_LOOP, Failure.TOO_MANY_REDIRECTS,
                                  Failure.INVALID})
DISALLOWED_REASON = "disallowed by the site's robots.txt"

# A verdict per origin: rules, None (no rules: allow all), or the failure every link there ends with.
_Verdict = Protego | FetchResult | None


def origin_of(url: str) -> str:
    """scheme://netloc: robots.txt applies per origin, port included."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class RobotsCache:
    """Answers "may we fetch this URL?" with one robots.txt request per origin and crawl."""

    def __init__(self, fetcher: Fetcher, user_agent: str, gate: HostGate) -> None:
        self._fetcher = fetcher
        self._agent = user_agent
        self._gate = gate
        self._verdicts: dict[str, _Verdict] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.attempts: list[FetchAttempt] = []  # robots.txt requests, for the crawl's request count

    async def check(self, url: str) -> FetchResult | None:
        """None when `url` may be fetched; otherwise the result that ends its fetch (blocked or failed)."""
        verdict = await self._verdict_for(url)
        if verdict is None:
            return None
        if isinstance(verdict, FetchResult):
            return replace(verdict, url=url, final_url=url, redirects=[])
        if verdict.can_fetch(url, self._agent):
            return None
        return FetchResult(url, url, failure=Failure.BLOCKED, reason=DISALLOWED_REASON)

    async def allowed(self, url: str) -> bool:
        return await self.check(url) is None

    def forget_failures(self) -> None:
        """Before the second try of unreachable hosts: their robots.txt is asked for again."""
        self._verdicts = {o: v for o, v in self._verdicts.items() if not isinstance(v, FetchResult)}

    async def _verdict_for(self, url: str) -> _Verdict:
        origin = origin_of(url)
        if origin in self._verdicts:
            return self._verdicts[origin]
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            if origin in self._verdicts:
                return self._verdicts[origin]
            verdict = await self._fetch_verdict(origin)
            if not (isinstance(verdict, FetchResult) and verdict.failure in (Failure.OFFLINE, Failure.ADDRESS)):
                # not tried because the network is down, or refused for this link's origin: ask again next time
                self._verdicts[origin] = verdict
        return verdict

    async def _fetch_verdict(self, origin: str) -> _Verdict:
        result = await self._fetcher.fetch(origin + "/robots.txt", self.attempts, max_attempts=ROBOTS_MAX_ATTEMPTS,
                                           max_bytes=ROBOTS_MAX_BYTES)  # the rest is never read (RFC 9309 §2.5)
        if result.body is not None and 200 <= (result.status or 0) < 300:
            text = result.body.body.decode("utf-8", errors="replace")
            rules = Protego.parse(text)
            delay = rules.crawl_delay(self._agent)
            if delay:
                self._gate.set_min_delay(host_of(origin), min(float(delay), MAX_CRAWL_DELAY_S))
            return rules
        if result.failure is Failure.ADDRESS and not result.redirects:  # the link's own fetch is refused the same way
            return result
        if result.failure is None or result.failure in UNAVAILABLE_FAILURES or result.failure is Failure.ADDRESS:
            logger.debug("no robots.txt for %s (%s): everything allowed", host_of(origin), result.reason)
            return None
        if result.failure in CONNECTION_FAILURES or result.failure is Failure.OFFLINE:
            return result
        return FetchResult(
            result.url, result.url, result.status, failure=Failure.ROBOTS_UNAVAILABLE,
            reason=f"robots.txt could not be read ({result.reason}), so the site counts as disallowing "
                   "everything for this crawl (RFC 9309)",
        )
