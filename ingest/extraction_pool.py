"""Extraction in isolation: untrusted pages are parsed in worker processes that can be killed.

A parser is the one place where a hostile page runs our CPU and memory: lxml can spin
for minutes inside C on an attribute bomb, a runaway parse can eat the machine, a bug
can segfault. So extraction runs in pebble `ProcessPool`s (one process each, two pages in
flight, see `ExtractionPool`), and:

- each document has a time limit (`LINKLENS_EXTRACT_TIMEOUT_S`); past it pebble kills
  the worker (SIGTERM, then SIGKILL for one stuck in C) and starts a new one;
- each worker has an address-space limit (`LINKLENS_EXTRACT_MEMORY_MB`, RLIMIT_AS), so
  a runaway parse gets MemoryError instead of the machine's memory;
- a worker that dies (segfault, `os._exit`, the kernel's OOM killer) is replaced by
  pebble, and the page it held ends with the reason;
- if a worker's pool as a whole breaks (a process that dies between pages), a new one takes
  its place, a bounded number of times in a row.

Guarantee: `ExtractionPool.extract` always returns, with a document or a failure reason in
words (`TIMED_OUT`, `CRASHED`, `OUT_OF_MEMORY`), never an exception for what a page did;
only cancellation of the caller propagates. A watchdog bounds every wait (time limit + kill
grace + dispatch grace), so even a task pebble lost cannot leave the caller waiting forever.

Kept from the plain ProcessPoolExecutor this replaces: workers fork from a forkserver that
has already imported trafilatura, they start at construction (warm before the first page
arrives), and they compress the body for the store along with extracting it. Why a
forkserver: `fork` from a process with threads (the HTTP client's resolver, a progress bar,
pebble's own) can deadlock a child; `spawn` re-imports trafilatura and lxml in every worker
(~1 s of CPU each, paid again on every replacement). The forkserver pays the import once
and forks clean workers from it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import pebble

from ingest.extract_job import WORKER_PRELOAD, extract_and_compress, warm_up
from ingest.models import Document, FetchedBody

logger = logging.getLogger(__name__)

# The reasons a link's extraction ends without a document; the crawl records them as `failed`.
TIMED_OUT = "extraction timed out after {seconds:g} s"
CRASHED = "extractor crashed ({detail})"
OUT_OF_MEMORY = "extraction ran out of memory (over the {megabytes} MB limit per worker)"
KEEP_DYING = "extractor crashed (the extraction workers keep dying; see the log)"
# "undecodable" is the extractor's own verdict on text full of U+FFFD (ingest.decode.undecodable_reason).
EXTRACTION_FAILURE_PREFIXES = ("extraction timed out", "extractor crashed", "extraction ran out of memory",
                               "undecodable:")

# pebble stops a worker with SIGTERM, waits 3 s, then SIGKILLs it; its manager loop ticks every 0.1 s.
KILL_GRACE_S = 5.0
# Time to pickle a capped body (10 MB) through the pipe and back, with a busy machine's margin.
DISPATCH_GRACE_S = 10.0
# Worker pools that break this many times in a row, with no page extracted between, are not coming back.
MAX_POOL_RESTARTS = 3
# Workers are recycled after this many documents, so slow leaks in parsers stay bounded.
MAX_DOCUMENTS_PER_WORKER = 500
# Pages sent to one process at a time: the one being parsed and the next, waiting in the pipe.
PIPELINE_DEPTH = 2
MAX_DETAIL_CHARS = 200

Job = Callable[[FetchedBody, str], tuple[Document, bytes]]


@dataclass
class Extraction:
    """What one page's extraction produced: a document and the compressed body, or why not."""

    document: Document | None = None
    compressed_body: bytes | None = None
    failure: str | None = None


def is_extraction_failure(reason: str | None) -> bool:
    """True for a link reason written by this module (the fetch itself went fine)."""
    return bool(reason) and str(reason).startswith(EXTRACTION_FAILURE_PREFIXES)


def start_worker(memory_limit_bytes: int) -> None:
    """pebble's worker initializer: cap the address space, then make sure the extractor is loaded."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_limit_bytes if hard == resource.RLIM_INFINITY else min(memory_limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    warm_up()


@dataclass(eq=False)  # compared (and hashed) by identity
class _Lane:
    """One extraction process, as a pebble pool of one: pebble times it out, kills and replaces it.

    `pool` is None once retired (after a crash with a neighbour in flight, a cancelled page or a
    broken pool); the next page starts a new one. `warming` is the warm-up page it starts with.
    `in_flight` holds the pebble futures of the pages sent to this process and not yet settled.
    """

    pool: pebble.ProcessPool | None
    warming: Future[None] | None = None
    in_flight: set[Future[Any]] = field(default_factory=set)


class _AgainAlone:
    """A page whose outcome was lost to a neighbour's crash: it runs again in a process of its own."""


AGAIN_ALONE = _AgainAlone()


class ExtractionPool:
    """Worker processes that extract documents, each page under the time and memory limits.

    Each process is a pebble pool of one, holding at most `PIPELINE_DEPTH` pages: the next page
    waits in the pipe while the current one is parsed, so a process never idles between pages.
    Why not one pebble pool of N processes: pebble blames a worker's death on the task it last
    saw start there, and with a result still in the pipe that is the page *before* the crash
    (measured: a PDF reported "crashed", the crashing page reported "timed out" 30 s later).
    Here a crash with a neighbour in flight retires that process and runs the pages it held
    again, each in a process of its own, where the blame is exact: the crashing page crashes
    again and is reported; its innocent neighbour is extracted.

    `job` is what a worker runs per page; production uses `extract_and_compress`, tests pass a
    function that hangs or crashes on purpose. It must be importable by name (it is pickled by
    reference) and return `(Document, compressed body)`. One instance may serve several
    consecutive event loops (a crawl, then a re-extraction), but one loop at a time.
    """

    def __init__(self, workers: int, timeout_s: float, memory_limit_mb: int, job: Job = extract_and_compress) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._job = job
        # the watchdog: a page may wait for the one ahead of it in its process, then run; each within the
        # time limit plus pebble's kill grace; plus the pipe both ways
        self._answer_within_s = PIPELINE_DEPTH * (timeout_s + KILL_GRACE_S) + DISPATCH_GRACE_S
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([*WORKER_PRELOAD, __name__])
        self._retiring: list[threading.Thread] = []
        self._breaks_in_a_row = 0
        self._gave_up = False
        self._closed = False
        self._waiters: deque[asyncio.Future[_Lane]] = deque()
        self._lanes = [self._started_lane() for _ in range(workers)]
        self._alone: set[_Lane] = set()
        # one token per page a process may hold; interleaved, so the first pages spread over all processes
        self._free = deque(lane for _ in range(PIPELINE_DEPTH) for lane in self._lanes)

    def _new_pebble_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=1,
            max_tasks=MAX_DOCUMENTS_PER_WORKER,
            initializer=start_worker,
            initargs=(self.memory_limit_mb * 2**20,),
            context=self._context,
        )

    def _started_lane(self) -> _Lane:
        """Started now (the warm-up page starts the process), while the crawl's first requests are in flight."""
        pool = self._new_pebble_pool()
        return _Lane(pool, pool.schedule(warm_up))

    async def extract(self, body: FetchedBody, title: str) -> Extraction:
        """The document of `body` (and its compressed bytes), or the reason there is none.

        Never raises for what a page does; waits for room in a worker first (back-pressure).
        """
        if self._closed:
            raise RuntimeError("the extraction pool was shut down")
        if self._gave_up:
            return Extraction(failure=KEEP_DYING)
        lane = await self._take()
        try:
            outcome = await self._on_lane(lane, body, title, alone=False)
        finally:
            self._give(lane)
        if isinstance(outcome, Extraction):
            return outcome
        alone = _Lane(None)
        self._alone.add(alone)
        try:
            settled = await self._on_lane(alone, body, title, alone=True)
        finally:
            self._retire(alone)
            self._alone.discard(alone)
        assert isinstance(settled, Extraction)  # alone, nothing can be lost to a neighbour
        return settled

    async def _on_lane(self, lane: _Lane, body: FetchedBody, title: str, alone: bool) -> Extraction | _AgainAlone:
        for _ in range(2):  # a broken pool is replaced and the page tried once more on the new one
            if self._gave_up:
                break
            if lane.pool is None:
                lane.pool = self._new_pebble_pool()
            if lane.warming is not None and not await self._warmed(lane):
                continue
            pool = lane.pool
            if pool is None:  # retired while we waited for the warm-up
                continue
            try:
                future = pool.schedule(self._job, args=(body, title), timeout=self.timeout_s)
            except RuntimeError:  # pebble refuses work once its pool broke
                self._renew(lane, pool, "the worker pool stopped accepting work")
                continue
            lane.in_flight.add(future)
            try:
                return await self._settle(lane, future, alone)
            except BrokenProcessPool as exc:
                self._renew(lane, pool, str(exc) or type(exc).__name__)
            finally:
                lane.in_flight.discard(future)
        return Extraction(failure=KEEP_DYING)

    async def _warmed(self, lane: _Lane) -> bool:
        """Wait for the lane's warm-up page; False (and the lane renewed) if its process never came up."""
        warming = lane.warming
        assert warming is not None
        done, _ = await asyncio.wait({asyncio.wrap_future(warming)}, timeout=self._answer_within_s)
        if lane.warming is not warming:  # another page on this lane already dealt with it
            return lane.pool is not None
        lane.warming = None
        if not done or warming.cancelled() or warming.exception() is not None:
            if lane.pool is not None:
                self._renew(lane, lane.pool, "the worker did not start")
            return False
        return True

    async def _settle(self, lane: _Lane, future: pebble.ProcessFuture[tuple[Document, bytes]],
                      alone: bool) -> Extraction | _AgainAlone:
        wrapped = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=self._answer_within_s)
        except asyncio.CancelledError:
            self._retire(lane)  # our page may be running there: nothing else may land on that process
            raise
        if not done:
            self._retire(lane)
            return Extraction(failure=CRASHED.format(
                detail=f"no answer from the worker within {self._answer_within_s:g} s"))
        if wrapped.cancelled():  # a neighbour's crash retired the process this page was on
            return AGAIN_ALONE
        try:
            document, compressed = wrapped.result()
        except BrokenProcessPool:
            raise
        except TimeoutError:  # pebble's: the worker was killed and replaced
            return Extraction(failure=TIMED_OUT.format(seconds=self.timeout_s))
        except MemoryError:
            return Extraction(failure=OUT_OF_MEMORY.format(megabytes=self.memory_limit_mb))
        except pebble.ProcessExpired as exc:
            if not alone and lane.in_flight - {future}:
                self._retire(lane)  # the blame may belong to a neighbour: both run again, alone
                return AGAIN_ALONE
            return Extraction(failure=CRASHED.format(detail=_death(exc.exitcode)))
        except Exception as exc:  # whatever the job raised in the worker
            logger.debug("extraction job raised", exc_info=exc)
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Extraction(failure=CRASHED.format(detail=detail[:MAX_DETAIL_CHARS]))
        self._breaks_in_a_row = 0
        return Extraction(document=document, compressed_body=compressed)

    def _renew(self, lane: _Lane, broken: pebble.ProcessPool, why: str) -> None:
        """A broken pebble pool: retire it; the next page starts a new one, unless pools keep breaking.

        Every page in flight on a broken pool reports it; only the first counts.
        """
        if lane.pool is not broken:
            return
        self._retire(lane)
        self._breaks_in_a_row += 1
        if self._breaks_in_a_row > MAX_POOL_RESTARTS:
            logger.error("extraction workers broke %d times in a row (last: %s); extracting nothing more",
                         self._breaks_in_a_row, why)
            self._gave_up = True
        else:
            logger.warning("extraction worker pool broke (%s); starting a new one", why)

    def _retire(self, lane: _Lane) -> None:
        """Stop the lane's process; pages still in flight on it are cancelled (and run again, alone)."""
        pool, lane.pool, lane.warming = lane.pool, None, None
        for future in list(lane.in_flight):
            future.cancel()
        if pool is None:
            return
        pool.stop()
        # joining waits for pebble to kill the process (up to its 3 s SIGTERM grace): not on the event loop
        joiner = threading.Thread(target=pool.join, name="linklens-retire-extractor", daemon=True)
        joiner.start()
        self._retiring.append(joiner)

    async def _take(self) -> _Lane:
        if self._free:
            return self._free.popleft()
        waiter: asyncio.Future[_Lane] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a lane just as we were cancelled
                self._give(waiter.result())
            raise

    def _give(self, lane: _Lane) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)

    def shutdown(self, cancel_futures: bool = True) -> None:
        """Stop every worker. With `cancel_futures`, pages in flight are dropped; otherwise finished first."""
        self._closed = True
        lanes = [*self._lanes, *self._alone]
        if cancel_futures:
            for lane in lanes:
                for future in list(lane.in_flight):
                    future.cancel()
        pools = [lane.pool for lane in lanes if lane.pool is not None]
        for pool in pools:
            if cancel_futures:
                pool.stop()
            else:
                pool.close()
        for pool in pools:
            pool.join()
        for joiner in self._retiring:
            joiner.join()
        self._retiring.clear()

    def __enter__(self) -> ExtractionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"worker exited with code {exitcode}"
