"""The crawl: every pending link fetched, extracted and stored, politely and resumably.

Shape of the work:
- a bounded queue feeds `concurrency` workers (back-pressure: we never hold more
  links in flight than we can fetch);
- links are interleaved by host, so one blog with 50 links does not occupy every
  worker while its per-host gate makes them wait;
- extraction runs in a process pool, so both cores parse while downloads go on;
- each link's outcome is stored in one transaction by the event-loop thread (the
  single writer). A link is pending until that commit, so a crawl killed at any
  point resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ingest.archive import Archive, Snapshot
from ingest.extraction_pool import ExtractionPool, is_extraction_failure
from ingest.fetcher import Failure, Fetcher, FetchResult, HostClients
from ingest.models import CrawlOutcome, Document, FetchAttempt, FetchedBody, LinkState
from ingest.politeness import HostGate
from ingest.robots import RobotsCache
from ingest.settings import Settings
from ingest.sniff import refuse_non_text
from ingest.store import Store
from ingest.urls import host_of

logger = logging.getLogger(__name__)
WEB_SCHEMES = ("http://", "https://")
# Failures for which the link itself is gone rather than merely unreachable right now.
DEAD_FAILURES = frozenset({Failure.GONE, Failure.DNS, Failure.REFUSED})
EXTRACT_BACKLOG_PER_WORKER = 4


@dataclass
class CrawlProgress:
    """A snapshot of the crawl for progress bars: cheap to build after every link."""

    done: int
    total: int
    counts: Counter[str]
    elapsed_s: float

    @property
    def pages_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class CrawlSummary:
    crawled: int
    total_links: int
    counts: dict[str, int]
    seconds: float
    requests: int
    this_run: dict[str, int] = field(default_factory=dict)

    @property
    def fetched_anything(self) -> bool:
        got = self.counts.get
        return (got("ok", 0) + got("redirected", 0) + got("archived", 0)) > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "crawled": self.crawled,
            "total_links": self.total_links,
            "states": self.counts,
            "this_run": self.this_run,
            "seconds": round(self.seconds, 3),
            "pages_per_s": round(self.crawled / self.seconds, 2) if self.seconds > 0 else 0.0,
            "requests": self.requests,
            "fetched_anything": self.fetched_anything,
        }


ProgressCallback = Callable[[CrawlProgress], None]


def interleave_by_host(items: list[tuple[int, str]]) -> list[int]:
    """Round-robin over hosts, keeping list order within each host."""
    queues: dict[str, deque[int]] = defaultdict(deque)
    for link_id, url in items:
        queues[host_of(url)].append(link_id)
    order: list[int] = []
    while queues:
        for host in list(queues):
            order.append(queues[host].popleft())
            if not queues[host]:
                del queues[host]
    return order


def extraction_pool(settings: Settings) -> ExtractionPool:
    """The crawl's extraction workers: one per core unless configured, each page under the time and memory limits."""
    workers = settings.extract_workers or os.cpu_count() or 1
    return ExtractionPool(workers, settings.extract_timeout_s, settings.extract_memory_mb)


class Crawler:
    """Crawls the store's pending links. One instance per run."""

    def __init__(self, settings: Settings, store: Store, executor: ExtractionPool | None = None) -> None:
        self._settings = settings
        self._store = store
        self._executor = executor
        self._requests = 0

    def run(self, refresh: bool = False, progress: ProgressCallback | None = None) -> CrawlSummary:
        return asyncio.run(self.crawl(refresh=refresh, progress=progress))

    def reextract(self, progress: ProgressCallback | None = None) -> int:
        """Extract every stored body again (after an extractor upgrade), without a single request."""
        return asyncio.run(self._reextract(progress))

    async def _reextract(self, progress: ProgressCallback | None) -> int:
        """Every stored body through the same checks as a crawl: sniffing first, then the isolated pool.

        A body that is not text ends its link `unsupported` (its stale document emptied); one that
        hangs or crashes the extractor ends it `failed`; a link that had failed in extraction and
        now extracts gets its fetch state back.
        """
        ids = self._store.link_ids_with_bodies()
        started = time.perf_counter()
        counts: Counter[str] = Counter()
        workers = self._settings.extract_workers or os.cpu_count() or 1
        slots = asyncio.Semaphore(EXTRACT_BACKLOG_PER_WORKER * workers)
        executor = self._executor or extraction_pool(self._settings)

        async def one(link_id: int) -> None:
            async with slots:
                counts[await self._reextract_link(executor, link_id)] += 1
                if progress:
                    progress(CrawlProgress(sum(counts.values()), len(ids), counts, time.perf_counter() - started))

        try:
            await asyncio.gather(*(one(i) for i in ids))
        finally:
            if self._executor is None:
                executor.shutdown(cancel_futures=True)
        return len(ids)

    async def _reextract_link(self, executor: ExtractionPool, link_id: int) -> str:
        """Re-extract one stored body and record the verdict; returns it: extracted, thin, unsupported or failed."""
        link = self._store.link(link_id)
        body = self._store.body(link_id)
        assert body is not None
        outcome = refuse_non_text(_restated(link, LinkState(link["state"]), link["reason"] or "", None, body))
        if outcome.state is LinkState.UNSUPPORTED:
            self._store.record_outcome(link_id, outcome)  # refuse_non_text dropped the body: the stored one stays
            return "unsupported"
        document = await self._extract(executor, outcome, link["title"])
        if document is None:
            self._store.record_outcome(link_id, _restated(link, LinkState.FAILED, outcome.reason, None))
            return "failed"
        if link["state"] == LinkState.FAILED and is_extraction_failure(link["reason"]):
            state, reason = _fetch_state(link)
            self._store.record_outcome(link_id, _restated(link, state, reason, document))
        else:
            self._store.replace_document(link_id, document)
        return "thin" if document.thin else "extracted"

    async def crawl(self, refresh: bool = False, progress: ProgressCallback | None = None) -> CrawlSummary:
        started = time.perf_counter()
        # Name resolution runs in the loop's default thread pool, which has 6 threads on 2 cores:
        # with hundreds of hosts (or no network) DNS would throttle the crawl. One thread per slot.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(self._settings.concurrency, thread_name_prefix="linklens-dns"))
        ids = self._store.link_ids_to_crawl(refresh=refresh)
        if refresh:
            self._store.reset_for_refresh(ids)
        order = interleave_by_host([(i, self._store.link(i)["url"]) for i in ids])
        counts: Counter[str] = Counter()
        s = self._settings
        own_executor = self._executor is None
        executor = self._executor or extraction_pool(s)
        gate = HostGate(s.per_host_concurrency, s.per_host_delay_s)
        # Back-pressure between the stages: fetchers stop when this many pages wait for extraction.
        extract_slots = asyncio.Semaphore(EXTRACT_BACKLOG_PER_WORKER * (s.extract_workers or os.cpu_count() or 1))
        finishing: set[asyncio.Task[None]] = set()
        try:
            async with HostClients(s) as clients:
                fetcher = Fetcher(s, clients, gate)
                robots = RobotsCache(fetcher, s.user_agent, gate)
                archive = Archive(fetcher, s.archive_url)
                queue: asyncio.Queue[int] = asyncio.Queue(maxsize=s.concurrency * 2)

                def store(link_id: int, outcome: CrawlOutcome) -> None:
                    self._requests += len(outcome.attempts)
                    self._store.record_outcome(link_id, outcome)
                    counts[outcome.state.value] += 1
                    queue.task_done()
                    if progress:
                        progress(CrawlProgress(sum(counts.values()), len(order), counts, time.perf_counter() - started))

                async def extract_then_store(link_id: int, outcome: CrawlOutcome, title: str) -> None:
                    try:
                        await self._extract(executor, outcome, title)
                        store(link_id, outcome)
                    finally:
                        extract_slots.release()

                async def fetch_worker() -> None:
                    """Fetch stage: hands pages to the extraction stage and moves on to the next link."""
                    while True:
                        link_id = await queue.get()
                        link = self._store.link(link_id)
                        outcome = refuse_non_text(await self._crawl_link(link, fetcher, robots, archive))
                        if outcome.body is None or outcome.not_modified:
                            store(link_id, outcome)
                            continue
                        await extract_slots.acquire()
                        task = asyncio.create_task(extract_then_store(link_id, outcome, link["title"]))
                        finishing.add(task)
                        task.add_done_callback(finishing.discard)

                workers = [asyncio.create_task(fetch_worker()) for _ in range(min(s.concurrency, max(1, len(order))))]
                try:
                    for link_id in order:
                        await queue.put(link_id)
                    await queue.join()
                finally:
                    for task in [*workers, *finishing]:
                        task.cancel()
                    await asyncio.gather(*workers, *finishing, return_exceptions=True)
        finally:
            if own_executor:
                executor.shutdown(cancel_futures=True)
        return CrawlSummary(
            crawled=len(order),
            total_links=sum(self._store.state_counts().values()),
            counts=self._store.state_counts(),
            seconds=time.perf_counter() - started,
            requests=self._requests,
            this_run=dict(counts),
        )

    async def _crawl_link(
        self, link: sqlite3.Row, fetcher: Fetcher, robots: RobotsCache, archive: Archive
    ) -> CrawlOutcome:
        """Fetch stage of one link: its final state and body; the document is extracted afterwards."""
        url: str = link["url"]
        if not url.lower().startswith(WEB_SCHEMES):
            scheme = url.split(":", 1)[0]
            return CrawlOutcome(LinkState.UNSUPPORTED, f"{scheme}: links are not fetched (only http and https)")
        if self._settings.respect_robots and not await robots.allowed(url):
            return CrawlOutcome(LinkState.BLOCKED, "disallowed by the site's robots.txt")
        attempts: list[FetchAttempt] = []
        result = await fetcher.fetch(url, attempts, etag=link["etag"], last_modified=link["last_modified"])
        if result.not_modified:
            return self._unchanged(link, result, attempts)
        if result.ok:
            state = LinkState.REDIRECTED if result.redirects else LinkState.OK
            reason = result.reason if not result.redirects else f"redirected to {result.final_url}"
            return CrawlOutcome(state, reason, attempts, final_url=result.final_url, http_status=result.status,
                                body=result.body)
        return await self._recover(url, result, attempts, archive)

    @staticmethod
    def _unchanged(link: sqlite3.Row, result: FetchResult, attempts: list[FetchAttempt]) -> CrawlOutcome:
        """304: keep the stored body and document; only the crawl record moves on."""
        final_url = link["final_url"] or link["url"]
        state = LinkState.REDIRECTED if final_url != link["url"] else LinkState.OK
        return CrawlOutcome(state, "not modified since last crawl (kept stored copy)", attempts, final_url=final_url,
                            http_status=304, not_modified=True)

    async def _recover(
        self, url: str, result: FetchResult, attempts: list[FetchAttempt], archive: Archive
    ) -> CrawlOutcome:
        """The live page is unavailable: try the web archive, else record why it failed."""
        dead = result.failure in DEAD_FAILURES
        final_state = LinkState.DEAD if dead else LinkState.FAILED
        if result.failure is Failure.OFFLINE:
            # Not tried at all: left pending (with the reason) so the next crawl, once online, takes it up.
            return CrawlOutcome(LinkState.PENDING, result.reason, attempts)
        if not self._settings.use_archive:
            return CrawlOutcome(final_state, result.reason, attempts, final_url=result.final_url,
                                http_status=result.status)
        snapshot = await archive.closest(url, attempts)
        if not isinstance(snapshot, Snapshot):
            note = "no archived copy" if snapshot is None else snapshot
            return CrawlOutcome(final_state, f"{result.reason}; {note}", attempts, final_url=result.final_url,
                                http_status=result.status)
        copy = await archive.fetch_snapshot(snapshot, attempts)
        if not copy.ok:
            return CrawlOutcome(final_state, f"{result.reason}; archived copy unavailable: {copy.reason}", attempts,
                                final_url=result.final_url, http_status=result.status,
                                archived_url=snapshot.url, archived_timestamp=snapshot.timestamp)
        return CrawlOutcome(
            LinkState.ARCHIVED,
            f"{result.reason}; text from the web archive snapshot of {snapshot.timestamp}",
            attempts,
            final_url=result.final_url,
            http_status=result.status,
            body=copy.body,
            archived_url=snapshot.url,
            archived_timestamp=snapshot.timestamp,
        )

    @staticmethod
    async def _extract(executor: ExtractionPool, outcome: CrawlOutcome, title: str) -> Document | None:
        """Extraction (and body compression) in an isolated worker; sets and returns `outcome.document`.

        A page that hangs, crashes or exhausts its worker ends `failed` with the reason in words;
        its body is still stored (so `--reextract` can try again later) and the crawl goes on.
        """
        assert outcome.body is not None
        extraction = await executor.extract(outcome.body, title)
        if extraction.failure is not None:
            logger.warning("extraction failed for %s: %s", outcome.body.url, extraction.failure)
            outcome.state = LinkState.FAILED
            outcome.reason = extraction.failure
        outcome.document = extraction.document
        outcome.compressed_body = extraction.compressed_body
        return extraction.document


def _restated(link: sqlite3.Row, state: LinkState, reason: str, document: Document | None,
              body: FetchedBody | None = None) -> CrawlOutcome:
    """A re-extraction's verdict as an outcome the store can record: the fetch facts stay as they were.

    Without `body` the store leaves the stored body alone.
    """
    return CrawlOutcome(state, reason, body=body, final_url=link["final_url"], http_status=link["http_status"],
                        archived_url=link["archived_url"], archived_timestamp=link["archived_timestamp"],
                        document=document)


def _fetch_state(link: sqlite3.Row) -> tuple[LinkState, str]:
    """The state a link had before its extraction failed, from the stored fetch facts."""
    if link["archived_url"]:
        return LinkState.ARCHIVED, f"text from the web archive snapshot of {link['archived_timestamp']}"
    if link["final_url"] and link["final_url"] != link["url"]:
        return LinkState.REDIRECTED, f"redirected to {link['final_url']}"
    return LinkState.OK, "text extracted again from the stored copy"
