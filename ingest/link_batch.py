"""Fetching a batch of links without the page store: the crawl's fetch stage for a distributed engine.

A Ray task cannot write to the driver's SQLite store (one writer, on another machine
perhaps), so it is handed its links with what the fetch needs to know about them (their
validators and whether a stored copy is kept) and hands their outcomes back, bodies included.
The work itself is the local crawler's: `LinkFetcher` with the same gate, robots.txt, retries,
deadlines, second try of unreachable hosts and archive fallback; only the `LinkBook` differs,
an in-memory one here. Batches run side by side reach shared hosts (redirect targets, the
archive), so a distributed engine hands each batch a `gate` paced for the whole cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.crawler import LinkFetcher
from ingest.models import CrawlOutcome, LinkState
from ingest.politeness import HostGate
from ingest.settings import Settings


@dataclass
class HandedLink:
    """One link as the driver hands it out: the store's row, and the date of the copy it keeps (if any)."""

    id: int
    url: str
    title: str
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    kept: str | None = None  # the store's `kept_text_date`: a live copy with a document, fetched on that date
    private_origin: bool = False  # cited by a list read from a file or a private address (ingest/address_policy.py)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class FetchedBatch:
    """What fetching a batch gave: each link's outcome, the requests made, and whether any host answered."""

    outcomes: dict[int, CrawlOutcome]
    requests: int
    network_seen: bool
    unsettled: list[int] = field(default_factory=list)  # left pending after their hosts' second try


OutcomeSink = Callable[[int, CrawlOutcome], None]


class HandedLinks:
    """A `LinkBook` over handed links: outcomes are kept in memory (the last one of each link wins),
    and passed to `on_outcome` as they come, for a caller that streams them on."""

    def __init__(self, links: list[HandedLink], on_outcome: OutcomeSink | None = None) -> None:
        self._links = {link.id: link for link in links}
        self._on_outcome = on_outcome
        self.outcomes: dict[int, CrawlOutcome] = {}

    def link(self, link_id: int) -> HandedLink:
        return self._links[link_id]

    def kept_text_date(self, link_id: int) -> str | None:
        return self._links[link_id].kept

    def record_outcome(self, link_id: int, outcome: CrawlOutcome) -> None:
        self.outcomes[link_id] = outcome
        if self._on_outcome is not None:
            self._on_outcome(link_id, outcome)

    def record_failure(self, link_id: int, reason: str) -> None:
        self.record_outcome(link_id, CrawlOutcome(LinkState.FAILED, reason))

    # A Ray task has no store to mark links in flight in: a task its link kills fails its batch, which Ray
    # reports to the driver; links the local engine found killing twice are settled by `links_to_crawl`.
    def fetch_started(self, link_id: int) -> None:
        pass

    def fetch_set_aside(self, link_id: int) -> None:
        pass


def fetch_batch(settings: Settings, links: list[HandedLink], answered_url: str | None = None,
                on_outcome: OutcomeSink | None = None, gate: HostGate | None = None) -> FetchedBatch:
    """Fetch `links` as the crawler does, stopping before extraction; every link comes back with an outcome.

    `answered_url` (a URL that answered elsewhere in the crawl) lets a batch whose own hosts all
    fail settle them as dead or failed; without it such links come back pending and `unsettled`.
    `on_outcome` is called (in the fetching thread) with each link's outcome as soon as it is settled.
    `gate` (a fresh one per batch) paces every request of the batch, robots.txt and the archive included;
    by default the batch has its own.
    """
    book = HandedLinks(links, on_outcome)
    fetcher = LinkFetcher(settings, book, fetch_only=True, answered_url=answered_url,
                          private_origin={link.id for link in links if link.private_origin}, gate=gate)
    run = asyncio.run(fetcher.fetch_links([link.id for link in links], time.perf_counter()))
    unsettled = [i for i, outcome in book.outcomes.items() if outcome.state is LinkState.PENDING]
    return FetchedBatch(book.outcomes, run.requests, run.gate.network_seen, unsettled)
