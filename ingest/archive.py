"""Recover dead links from the Wayback Machine.

We ask the availability API for the closest snapshot, then fetch its raw copy
(the `id_` form of the snapshot URL, which serves the page as archived, without
the archive's toolbar). The base URL is a setting so tests run a local fake.

A circuit breaker stops asking after a few consecutive failures to reach the
archive: with no network, 600 dead links must not mean 600 slow archive calls.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import quote

from ingest.fetcher import Fetcher, FetchResult
from ingest.models import FetchAttempt

logger = logging.getLogger(__name__)
ARCHIVE_MAX_ATTEMPTS = 2
BREAKER_THRESHOLD = 3
# The availability API answers a few hundred bytes of JSON; more than this is not its answer.
AVAILABILITY_MAX_BYTES = 64 * 1024
_SNAPSHOT_PATH = re.compile(r"/web/(\d{1,14})(?:[a-z]{2}_)?/")


@dataclass
class Snapshot:
    url: str
    timestamp: str


def raw_snapshot_url(snapshot_url: str) -> str:
    """`/web/20150101000000/http://x` → `/web/20150101000000id_/http://x`."""
    return _SNAPSHOT_PATH.sub(lambda m: f"/web/{m.group(1)}id_/", snapshot_url, count=1)


class Archive:
    """Availability lookups and raw snapshot fetches, sharing the crawler's polite fetcher."""

    def __init__(self, fetcher: Fetcher, base_url: str) -> None:
        self._fetcher = fetcher
        self._base = base_url.rstrip("/")
        self._consecutive_failures = 0

    @property
    def open_circuit(self) -> bool:
        return self._consecutive_failures >= BREAKER_THRESHOLD

    async def closest(self, url: str, attempts: list[FetchAttempt]) -> Snapshot | None | str:
        """The closest snapshot, None when the archive has none, or a reason string when it could not be asked."""
        if self.open_circuit:
            return "web archive unreachable (gave up asking after repeated failures)"
        api = f"{self._base}/wayback/available?url={quote(url, safe='')}"
        result = await self._fetcher.fetch(api, attempts, from_archive=True, max_attempts=ARCHIVE_MAX_ATTEMPTS,
                                           max_bytes=AVAILABILITY_MAX_BYTES)
        if result.body is None:
            self._consecutive_failures += 1
            return f"web archive lookup failed: {result.reason}"
        self._consecutive_failures = 0
        try:
            closest = json.loads(result.body.body).get("archived_snapshots", {}).get("closest")
        except (ValueError, AttributeError):
            return "web archive answered with something that is not its availability JSON"
        if not closest or not closest.get("available") or not str(closest.get("status", "200")).startswith("2"):
            return None
        return Snapshot(url=str(closest["url"]), timestamp=str(closest.get("timestamp", "")))

    async def fetch_snapshot(self, snapshot: Snapshot, attempts: list[FetchAttempt]) -> FetchResult:
        return await self._fetcher.fetch(
            raw_snapshot_url(snapshot.url), attempts, from_archive=True, max_attempts=ARCHIVE_MAX_ATTEMPTS
        )
