"""The crawl: every pending link fetched, extracted and stored, politely and resumably.

Shape of the work:
- a bounded queue feeds `concurrency` workers (back-pressure: we never hold more
  links in flight than we can fetch);
- links are interleaved by host, so one blog with 50 links does not occupy every
  worker while its per-host gate makes them wait;
- extraction runs in an isolated process pool (time and memory limits per page), so both cores
  parse while downloads go on and a page that hangs or crashes its parser costs only that page;
- each link's outcome is stored in one transaction by the event-loop thread (the
  single writer). A link is pending until that commit, so a crawl killed at any
  point resumes exactly where it stopped.

One guard per link: whatever is raised while a link is fetched (robots.txt, the page, the web
archive), extracted or stored, that link ends `failed` with the exception named in its reason, and
the queue, the extraction slots and the progress count are released on every path. A fetch worker
never dies, so the crawl always ends.

Transient is not dead: a link whose host could not be reached (DNS, refused, connect timeout) is
tried once more at the end of the crawl. Only then is it `dead` (the host name still does not exist
while other hosts answer) or `failed` (still unreachable: worth `--retry-failed` later); if the
network went down meanwhile, it stays `pending`.

Two classes: `LinkFetcher` is all of the above for a given set of links, reading them from and
recording them in a `LinkBook`; `Crawler` runs it over the page store's pending links. The Ray
engine runs the same `LinkFetcher` over the links of one fetch unit (ingest/link_batch.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from ingest import address_policy
from ingest.archive import Archive, Snapshot
from ingest.extract_job import extract_and_compress
from ingest.extraction_pool import ExtractionPool, is_extraction_failure
from ingest.fetcher import CONNECTION_FAILURES, NETWORK_DOWN_REASON, Failure, Fetcher, FetchResult
from ingest.host_pools import HostClients
from ingest.models import CrawlOutcome, Document, FetchAttempt, FetchedBody, LinkState
from ingest.politeness import HostGate
from ingest.robots import RobotsCache
from ingest.settings import Settings
from ingest.sniff import Refusal, refuse_non_text, sniff
from ingest.sources import read_from_private
from ingest.store import Store
from ingest.urls import host_of

logger = logging.getLogger(__name__)
WEB_SCHEMES = ("http://", "https://")
EXTRACT_BACKLOG_PER_WORKER = 4
NOTHING_ANSWERED_REASON = ("no host answered during this crawl, the network looks down — "
                           "run linklens crawl again when online")
# Test hook only (tests/test_poison_pill.py): a fetch whose URL holds this variable's value kills the
# crawler with SIGKILL, as the kernel's OOM killer would. Never set outside that test.
DIE_ON_URL_TEST_ENV = "LINKLENS_TEST_DIE_FETCHING"


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


class LinkRow(Protocol):
    """One link as the fetch stage reads it: a page-store row, or a dict with the same keys
    (id, url, title, etag, last_modified, final_url)."""

    def __getitem__(self, key: str, /) -> Any: ...


class LinkBook(Protocol):
    """Where the fetch machinery reads its links and records their outcomes.

    The page store is one; the links a Ray task was handed (ingest/link_batch.py) are another,
    so both engines fetch through the same code and only the place outcomes go differs.
    """

    def link(self, link_id: int) -> LinkRow: ...

    def kept_text_date(self, link_id: int) -> str | None: ...

    def record_outcome(self, link_id: int, outcome: CrawlOutcome) -> None: ...

    def record_failure(self, link_id: int, reason: str) -> None: ...

    def fetch_started(self, link_id: int) -> None: ...

    def fetch_set_aside(self, link_id: int) -> None: ...


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
    job = partial(extract_and_compress, include_comments=settings.include_comments)
    return ExtractionPool(workers, settings.extract_timeout_s, settings.extract_memory_mb, job=job)


def crash_reason(stage: str, exc: BaseException) -> str:
    """An unexpected exception, in words, for a link's reason."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected error while {stage}: {type(exc).__name__}" + (f" ({message[:200]})" if message else "")


@dataclass
class _SecondTry:
    """A link whose host could not be reached on the first try: tried again at the end of the crawl."""

    attempts: list[FetchAttempt]
    at: float  # time.monotonic() of the failure
    reason: str
    result: FetchResult | None = None  # set once the second try failed too: settled when we know the network works
    kept: str | None = None  # date of the stored text a refresh keeps


@dataclass
class _Run:
    """Everything one crawl shares between its workers, and its bookkeeping."""

    fetcher: Fetcher
    robots: RobotsCache
    archive: Archive
    gate: HostGate
    executor: ExtractionPool | None  # None when only fetching (the Ray engine extracts in a stage of its own)
    extract_slots: asyncio.Semaphore
    total: int
    started: float
    progress: ProgressCallback | None
    counts: Counter[str] = field(default_factory=Counter)
    finishing: set[asyncio.Task[None]] = field(default_factory=set)
    second_try: dict[int, _SecondTry] = field(default_factory=dict)
    requests: int = 0


class LinkFetcher:
    """The crawl's machinery for a given set of links: fetch (politely, with retries, deadlines, robots.txt
    and the archive fallback), extract, record each outcome in a `LinkBook`.

    `fetch_only` stops before extraction: a page's outcome is recorded with its body, for a later
    extraction stage (the Ray engine). `answered_url` is a URL known to answer, from outside this
    run: with it, a run whose own hosts all fail can still tell dead hosts from a dead network.
    `private_origin` holds the links cited by a list read from a file or a private address: under
    `LINKLENS_PRIVATE_TARGETS=auto` only they may lead to private addresses (ingest/address_policy.py).
    `gate` replaces the run's own `HostGate` (one run: it keeps what the run learns about hosts), for an
    engine whose pacing of hosts is shared with other runs (the Ray engine's fetch units).
    """

    def __init__(self, settings: Settings, book: LinkBook, executor: ExtractionPool | None = None,
                 fetch_only: bool = False, answered_url: str | None = None,
                 private_origin: Collection[int] = frozenset(), gate: HostGate | None = None) -> None:
        self._settings = settings
        self._gate = gate
        self._book = book
        self._executor = executor
        self._fetch_only = fetch_only
        self._answered_url = answered_url
        self._private_origin = private_origin

    def _address_scope(self, link_id: int | None) -> AbstractContextManager[None]:
        """Everything fetched for a link (robots.txt, redirects, the archive) follows that link's origin;
        `None`: a URL that already answered in this crawl (the network check)."""
        private = link_id is None or link_id in self._private_origin
        return address_policy.private_targets(private, self._settings.private_targets)

    async def fetch_links(self, ids: list[int], started: float, progress: ProgressCallback | None = None,
                          alone: Collection[int] = ()) -> _Run:
        """Every link of `ids` through the stages, then the second try of unreachable hosts; the run's bookkeeping.

        The links of `alone` (in flight when a crawler died) go first, one at a time and each to its
        end, so that if one of them kills the crawler again, it is the only one counted.
        """
        s = self._settings
        # Name resolution runs in the loop's default thread pool, which has 6 threads on 2 cores:
        # with hundreds of hosts (or no network) DNS would throttle the crawl. One thread per slot.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(s.concurrency, thread_name_prefix="linklens-dns"))
        order = interleave_by_host([(i, self._book.link(i)["url"]) for i in ids])
        own_executor = self._executor is None and not self._fetch_only
        workers = s.extract_workers or os.cpu_count() or 1
        executor = self._executor if self._executor is not None or self._fetch_only else extraction_pool(s)
        gate = self._gate or HostGate(s.per_host_concurrency, s.per_host_delay_s)
        if self._answered_url is not None:
            gate.mark_network_seen(self._answered_url)
        try:
            async with HostClients(s) as clients:
                fetcher = Fetcher(s, clients, gate)
                run = _Run(
                    fetcher=fetcher,
                    robots=RobotsCache(fetcher, s.user_agent, gate),
                    archive=Archive(fetcher, s.archive_url),
                    gate=gate,
                    executor=executor,
                    # Back-pressure between the stages: fetchers stop when this many pages wait for extraction.
                    extract_slots=asyncio.Semaphore(EXTRACT_BACKLOG_PER_WORKER * workers),
                    total=len(order),
                    started=started,
                    progress=progress,
                )
                for link_id in [i for i in order if i in alone]:
                    await self._pass(run, [link_id], last_try=False)
                await self._pass(run, [i for i in order if i not in alone], last_try=False)
                if run.second_try:
                    try:
                        await self._second_try(run)
                    except Exception:  # what was not settled stays pending (never stored): the next run takes it
                        logger.exception("the second try of unreachable hosts stopped")
                run.requests += len(run.robots.attempts)
        finally:
            if own_executor and executor is not None:
                executor.shutdown(cancel_futures=True)
        return run

    async def _second_try(self, run: _Run) -> None:
        """Links whose host could not be reached: tried once more, and settled only while the network works.

        Before the second try and before settling what failed again, one URL that answered earlier in
        the crawl is asked again: if it does not answer either, the network is down, not those hosts,
        and their links stay pending for the next run.
        """
        later = dict(run.second_try)
        run.second_try.clear()
        run.gate.forget_unreachable()
        run.robots.forget_failures()
        if not await self._network_works(run):
            self._leave_pending(run, later)
            return
        wait = max(first.at for first in later.values()) + self._settings.second_try_after_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        order = interleave_by_host([(i, self._book.link(i)["url"]) for i in later])
        await self._pass(run, order, last_try=True, earlier={i: first.attempts for i, first in later.items()})
        still = dict(run.second_try)
        run.second_try.clear()
        if not still:
            return
        if not await self._network_works(run):
            self._leave_pending(run, still)
            return
        await asyncio.gather(*(self._settle(run, link_id, again) for link_id, again in still.items()))

    async def _network_works(self, run: _Run) -> bool:
        """Whether the last URL that answered during this crawl answers again, over a new connection."""
        url = run.gate.last_answered_url
        if run.gate.network_down or url is None:
            return False
        try:
            with self._address_scope(None):
                return await run.fetcher.answers_now(url) and not run.gate.network_down
        except Exception:
            logger.warning("network check on %s failed", url, exc_info=True)
            return False

    def _leave_pending(self, run: _Run, links: dict[int, _SecondTry]) -> None:
        reason = NETWORK_DOWN_REASON if run.gate.network_seen else NOTHING_ANSWERED_REASON
        for link_id, tried in links.items():
            self._finish(run, link_id, CrawlOutcome(LinkState.PENDING, f"{tried.reason}; {reason}", tried.attempts))

    async def _settle(self, run: _Run, link_id: int, again: _SecondTry) -> None:
        """A host still unreachable at the end while others answer: dead (NXDOMAIN) or failed, archive tried."""
        assert again.result is not None
        try:
            url = str(self._book.link(link_id)["url"])
            with self._address_scope(link_id):
                outcome = await self._recover(url, again.result, again.attempts, run.archive, again.kept)
        except Exception as exc:
            logger.warning("link %s: %s", link_id, crash_reason("fetching", exc), exc_info=True)
            outcome = CrawlOutcome(LinkState.FAILED, crash_reason("fetching", exc), again.attempts)
        self._finish(run, link_id, outcome)

    async def _pass(self, run: _Run, order: list[int], last_try: bool,
                    earlier: dict[int, list[FetchAttempt]] | None = None) -> None:
        """Every link of `order` through the fetch stage (and on to extraction); returns when all are settled."""
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=self._settings.concurrency * 2)

        async def fetch_worker() -> None:
            """Fetch stage: hands pages to the extraction stage and moves on to the next link."""
            while True:
                link_id = await queue.get()
                await self._guarded_fetch(run, link_id, last_try, (earlier or {}).get(link_id, []),
                                          queue.task_done)

        workers = [asyncio.create_task(fetch_worker())
                   for _ in range(min(self._settings.concurrency, max(1, len(order))))]
        try:
            for link_id in order:
                await queue.put(link_id)
            await queue.join()
        finally:
            for task in [*workers, *run.finishing]:
                task.cancel()
            await asyncio.gather(*workers, *run.finishing, return_exceptions=True)

    async def _guarded_fetch(self, run: _Run, link_id: int, last_try: bool, earlier: list[FetchAttempt],
                             done: Callable[[], None]) -> None:
        """The guard around one link's fetch stage: it always ends stored, handed on, or set aside."""
        handed_off = False
        try:
            link = self._book.link(link_id)
            self._book.fetch_started(link_id)  # committed: if the crawler dies now, the next run knows
            with self._address_scope(link_id):
                outcome = await self._crawl_link(link, run, last_try)
            outcome.attempts[:0] = earlier
            if isinstance(outcome, _SecondTry):
                run.second_try[link_id] = outcome
                self._book.fetch_set_aside(link_id)
                return
            outcome = self._keep_good_text(link_id, outcome, refuse_non_text(outcome))
            if not needs_extraction(outcome) or run.executor is None:
                self._finish(run, link_id, outcome)  # with no extraction here, the body goes on to a later stage
                return
            await run.extract_slots.acquire()
            task = asyncio.create_task(self._extract_then_store(run, link_id, outcome, link["title"], done))
            handed_off = True
            run.finishing.add(task)
            task.add_done_callback(run.finishing.discard)
        except Exception as exc:
            logger.warning("link %s: %s", link_id, crash_reason("fetching", exc), exc_info=True)
            self._finish(run, link_id, CrawlOutcome(LinkState.FAILED, crash_reason("fetching", exc), earlier))
        finally:
            if not handed_off:
                done()

    async def _extract_then_store(self, run: _Run, link_id: int, outcome: CrawlOutcome, title: str,
                                  done: Callable[[], None]) -> None:
        """Extraction stage of one link, under the same guard: it always ends stored."""
        try:
            assert run.executor is not None
            await extract_outcome(run.executor, outcome, title, link_id)
            self._finish(run, link_id, outcome)
        finally:
            run.extract_slots.release()
            done()

    def _keep_good_text(self, link_id: int, fetched: CrawlOutcome, checked: CrawlOutcome) -> CrawlOutcome:
        """A refresh answered with an empty or non-text body keeps the last good text, as a failing one does.

        `checked` is `fetched` after the sniffing check; when that refused the body and the link has
        live text from an earlier crawl, the outcome stores neither body nor document (so the text and
        the validators that go with it stay) and says what the page answered: `failed` for an empty
        body (worth trying again), `unsupported` for one that is not text.
        """
        if checked is fetched or fetched.body is None:
            return checked
        kept = self._book.kept_text_date(link_id)
        if kept is None:
            return checked
        empty = sniff(fetched.body.body, fetched.body.content_type).refusal is Refusal.EMPTY
        state = LinkState.FAILED if empty else LinkState.UNSUPPORTED
        return CrawlOutcome(state, f"{checked.reason}; keeping the text fetched on {kept}",
                            fetched.attempts, final_url=fetched.final_url, http_status=fetched.http_status)

    def _finish(self, run: _Run, link_id: int, outcome: CrawlOutcome) -> None:
        """Store one link's outcome; if even that fails, store the failure; count it and report progress."""
        outcome = record_outcome(self._book, link_id, outcome)
        run.requests += len(outcome.attempts)
        run.counts[outcome.state.value] += 1
        if run.progress:
            try:
                run.progress(CrawlProgress(sum(run.counts.values()), run.total, run.counts,
                                           time.perf_counter() - run.started))
            except Exception:
                logger.exception("progress report failed")

    async def _crawl_link(self, link: LinkRow, run: _Run, last_try: bool) -> CrawlOutcome | _SecondTry:
        """Fetch stage of one link: its final state and body; the document is extracted afterwards."""
        url: str = link["url"]
        if not url.lower().startswith(WEB_SCHEMES):
            scheme = url.split(":", 1)[0]
            return CrawlOutcome(LinkState.UNSUPPORTED, f"{scheme}: links are not fetched (only http and https)")
        attempts: list[FetchAttempt] = []
        # Validators only for a live copy we still hold: a 304 must have something to keep.
        kept = self._book.kept_text_date(link["id"])
        check = run.robots.check if self._settings.respect_robots else None
        die_on = os.environ.get(DIE_ON_URL_TEST_ENV)
        if die_on and die_on in url:
            os.kill(os.getpid(), signal.SIGKILL)
        result = await run.fetcher.fetch(url, attempts, etag=link["etag"] if kept else None,
                                         last_modified=link["last_modified"] if kept else None, check_hop=check)
        if result.not_modified:
            return self._unchanged(link, result, attempts)
        if result.ok:
            state = LinkState.REDIRECTED if result.redirects else LinkState.OK
            reason = result.reason if not result.redirects else f"redirected to {result.final_url}"
            return CrawlOutcome(state, reason, attempts, final_url=result.final_url, http_status=result.status,
                                body=result.body)
        if result.failure is Failure.BLOCKED or result.failure is Failure.ADDRESS:
            return CrawlOutcome(LinkState.BLOCKED, result.reason, attempts, final_url=result.final_url)
        if result.failure is Failure.OFFLINE:
            # Not tried at all: left pending (with the reason) so the next crawl, once online, takes it up.
            return CrawlOutcome(LinkState.PENDING, result.reason, attempts)
        if result.failure in CONNECTION_FAILURES:
            # Settled at the end of the crawl, when we know whether the network itself still works.
            return _SecondTry(attempts, time.monotonic(), result.reason, result if last_try else None, kept)
        return await self._recover(url, result, attempts, run.archive, kept)

    @staticmethod
    def _unchanged(link: LinkRow, result: FetchResult, attempts: list[FetchAttempt]) -> CrawlOutcome:
        """304: keep the stored body and document; only the crawl record moves on."""
        final_url = link["final_url"] or link["url"]
        state = LinkState.REDIRECTED if final_url != link["url"] else LinkState.OK
        return CrawlOutcome(state, "not modified since last crawl (kept stored copy)", attempts, final_url=final_url,
                            http_status=304, not_modified=True)

    async def _recover(
        self, url: str, result: FetchResult, attempts: list[FetchAttempt], archive: Archive, kept: str | None
    ) -> CrawlOutcome:
        """The live page is unavailable: keep the text we have, else try the web archive, else say why."""
        dead = result.failure is Failure.GONE or result.failure is Failure.NXDOMAIN
        final_state = LinkState.DEAD if dead else LinkState.FAILED
        reason = result.reason
        if result.failure is Failure.NXDOMAIN:
            reason += ", confirmed by a second lookup"
        if kept is not None:
            # A refresh that fails keeps the last good text, and says so; the archive is not needed.
            return CrawlOutcome(final_state, f"{reason}; keeping the text fetched on {kept}", attempts,
                                final_url=result.final_url, http_status=result.status)
        if not self._settings.use_archive:
            return CrawlOutcome(final_state, reason, attempts, final_url=result.final_url,
                                http_status=result.status)
        snapshot = await archive.closest(url, attempts)
        if not isinstance(snapshot, Snapshot):
            note = "no archived copy" if snapshot is None else snapshot
            return CrawlOutcome(final_state, f"{reason}; {note}", attempts, final_url=result.final_url,
                                http_status=result.status)
        copy = await archive.fetch_snapshot(snapshot, attempts)
        if not copy.ok:
            return CrawlOutcome(final_state, f"{reason}; archived copy unavailable: {copy.reason}", attempts,
                                final_url=result.final_url, http_status=result.status,
                                archived_url=snapshot.url, archived_timestamp=snapshot.timestamp)
        return CrawlOutcome(
            LinkState.ARCHIVED,
            f"{reason}; text from the web archive snapshot of {snapshot.timestamp}",
            attempts,
            final_url=result.final_url,
            http_status=result.status,
            body=copy.body,
            archived_url=snapshot.url,
            archived_timestamp=snapshot.timestamp,
            from_archive=True,
        )


class Crawler(LinkFetcher):
    """Crawls the store's pending links (those of the collection: every link still cited). One instance per run."""

    def __init__(self, settings: Settings, store: Store, executor: ExtractionPool | None = None) -> None:
        super().__init__(settings, store, executor)
        self._store = store

    def run(self, refresh: bool = False, progress: ProgressCallback | None = None,
            retry_failed: bool = False) -> CrawlSummary:
        return asyncio.run(self.crawl(refresh=refresh, progress=progress, retry_failed=retry_failed))

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
                counts[await self._guarded_reextract(executor, link_id)] += 1
                if progress:
                    progress(CrawlProgress(sum(counts.values()), len(ids), counts, time.perf_counter() - started))

        try:
            await asyncio.gather(*(one(i) for i in ids))
        finally:
            if self._executor is None:
                executor.shutdown(cancel_futures=True)
        return len(ids)

    async def _guarded_reextract(self, executor: ExtractionPool, link_id: int) -> str:
        """The guard around one link's re-extraction, as around a crawled one: whatever is raised (a corrupt
        stored body, a store error), that link ends `failed` with the reason and the run goes on."""
        try:
            return await self._reextract_link(executor, link_id)
        except Exception as exc:
            reason = crash_reason("extracting the stored copy again", exc)
            logger.warning("link %s: %s", link_id, reason, exc_info=True)
            try:
                self._store.record_failure(link_id, reason)
            except Exception:  # the store itself is unusable: the link keeps what it had
                logger.exception("link %s: its failure could not be stored", link_id)
            return "failed"

    async def _reextract_link(self, executor: ExtractionPool, link_id: int) -> str:
        """Re-extract one stored body and record the verdict; returns it: extracted, thin, unsupported or failed."""
        link = self._store.link(link_id)
        body = self._store.body(link_id)
        assert body is not None
        outcome = refuse_non_text(_restated(link, LinkState(link["state"]), link["reason"] or "", None, body))
        if outcome.state is LinkState.UNSUPPORTED:
            self._store.record_outcome(link_id, outcome)  # refuse_non_text dropped the body: the stored one stays
            return "unsupported"
        document = await extract_page(executor, outcome, link["title"])
        if document is None:
            self._store.record_outcome(link_id, _restated(link, LinkState.FAILED, outcome.reason, None))
            return "failed"
        if link["state"] == LinkState.FAILED and is_extraction_failure(link["reason"]):
            state, reason = _fetch_state(link)
            self._store.record_outcome(link_id, _restated(link, state, reason, document))
        else:
            self._store.replace_document(link_id, document)
        return "thin" if document.thin else "extracted"

    async def crawl(self, refresh: bool = False, progress: ProgressCallback | None = None,
                    retry_failed: bool = False) -> CrawlSummary:
        started = time.perf_counter()
        ids = links_to_crawl(self._store, refresh, retry_failed)
        self._private_origin = private_origin_links(self._store, self._settings)
        run = await self.fetch_links(ids, started, progress, alone=self._store.links_in_doubt(ids))
        return crawl_summary(self._store, len(ids), started, run.requests, run.counts)


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


def links_to_crawl(store: Store, refresh: bool, retry_failed: bool) -> list[int]:
    """The store's links a crawl takes up (either engine), reset first when they are re-checked or retried.

    A link that was in flight when the crawler died twice is `failed` first (a poison pill: fetching it
    again would kill this crawl too); `--retry-failed` takes it up again, as asked.
    """
    died = store.fail_died_twice()
    if died:
        logger.warning("%d links killed the crawler twice while being fetched: they end failed", died)
    ids = store.link_ids_to_crawl(refresh=refresh, retry_failed=retry_failed)
    if refresh or retry_failed:
        store.reset_for_refresh(ids)
    return ids


def private_origin_links(store: Store, settings: Settings) -> set[int]:
    """Links cited by at least one list read from a file or a private address (either engine).

    A link cited by several lists may lead where the most trusted of them may: an intranet list
    citing an intranet page makes it fetchable even if a public list cites it too.
    """
    verdicts: dict[str, bool] = {}
    out = set()
    for link_id, sources in store.list_sources_by_link().items():
        for source in sources:
            if source not in verdicts:
                verdicts[source] = read_from_private(source, settings)
            if verdicts[source]:
                out.add(link_id)
                break
    return out


def crawl_summary(store: Store, crawled: int, started: float, requests: int,
                  this_run: Mapping[str, int]) -> CrawlSummary:
    """What a crawl (either engine) reports: `this_run` counts the states it gave, the store's counts all links."""
    counts = store.state_counts()
    return CrawlSummary(crawled=crawled, total_links=sum(counts.values()), counts=counts,
                        seconds=time.perf_counter() - started, requests=requests, this_run=dict(this_run))


def needs_extraction(outcome: CrawlOutcome) -> bool:
    """A body that passed the sniffing check and is not a 304's kept copy goes on to extraction."""
    return outcome.body is not None and not outcome.not_modified


async def extract_page(executor: ExtractionPool, outcome: CrawlOutcome, title: str) -> Document | None:
    """Extraction (and body compression) in an isolated worker; sets and returns `outcome.document`.

    A page that hangs, crashes or exhausts its worker ends `failed` with the reason in words;
    its body is still stored (so `--reextract` can try again later) and the crawl goes on.
    """
    assert outcome.body is not None
    extraction = await executor.extract(outcome.body, title)
    failure = extraction.failure
    if failure is None and extraction.document is not None and extraction.document.failure:
        failure = extraction.document.failure  # text that did not decode: never stored as the link's text
        extraction.document = None
    if failure is not None:
        logger.warning("extraction failed for %s: %s", outcome.body.url, failure)
        outcome.state = LinkState.FAILED
        outcome.reason = failure
    outcome.document = extraction.document
    outcome.compressed_body = extraction.compressed_body
    return extraction.document


async def extract_outcome(executor: ExtractionPool, outcome: CrawlOutcome, title: str, link_id: int) -> None:
    """The extraction stage of one fetched link, as both engines run it: `outcome` gets its document, or
    ends `failed` with the reason; whatever is raised, it is settled here."""
    try:
        await extract_page(executor, outcome, title)
    except Exception as exc:
        logger.warning("link %s: %s", link_id, crash_reason("extracting", exc), exc_info=True)
        # The body is kept, so `linklens crawl --reextract` can try again once the cause is fixed.
        outcome.state = LinkState.FAILED
        outcome.reason = crash_reason("extracting", exc)
        outcome.document = None


def record_outcome(book: LinkBook, link_id: int, outcome: CrawlOutcome) -> CrawlOutcome:
    """Record one link's outcome; if even that fails, record the failure. Returns what was recorded."""
    outcome = keep_words_over_none(book, link_id, outcome)
    try:
        book.record_outcome(link_id, outcome)
    except Exception as exc:
        logger.warning("link %s: %s", link_id, crash_reason("storing", exc), exc_info=True)
        outcome = CrawlOutcome(LinkState.FAILED, crash_reason("storing its outcome", exc), outcome.attempts)
        try:
            book.record_failure(link_id, outcome.reason)
        except Exception:  # the store itself is unusable: the link stays pending for the next run
            logger.exception("link %s could not be stored; it stays pending", link_id)
    return outcome



def keep_words_over_none(book: LinkBook, link_id: int, outcome: CrawlOutcome) -> CrawlOutcome:
    """A refreshed page that now extracts to no words keeps the text an earlier crawl found.

    A redesign, a consent wall or a page now drawn by scripts answers 200 with markup and no
    article; storing it would silently empty the link's text (and the search would lose it). The
    outcome then stores neither the new body nor a document, so the old text and the validators
    that go with it stay, and it says what happened: `failed` (worth trying again), with the date
    of the text kept. Both engines record through here, so both keep it.
    """
    fresh_body = outcome.body is not None and not outcome.not_modified
    if not fresh_body or outcome.document is None or outcome.document.text.strip():
        return outcome
    kept = book.kept_text_date(link_id)
    if kept is None:
        return outcome
    return CrawlOutcome(LinkState.FAILED, f"the page now yields no text; keeping the text fetched on {kept}",
                        outcome.attempts, final_url=outcome.final_url, http_status=outcome.http_status)
