"""Extraction in isolation: untrusted pages are parsed in worker processes that can be killed.

A parser is the one place where a hostile page runs our CPU and memory: lxml can spin
for minutes inside C on an attribute bomb, a runaway parse can eat the machine, a bug
can segfault. So extraction runs in pebble `ProcessPool`s (one process each, see
`ExtractionPool`), and:

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
from dataclasses import dataclass
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
EXTRACTION_FAILURE_PREFIXES = ("extraction timed out", "extractor crashed", "extraction ran out of memory")

# pebble stops a worker with SIGTERM, waits 3 s, then SIGKILLs it; its manager loop ticks every 0.1 s.
KILL_GRACE_S = 5.0
# Time to pickle a capped body (10 MB) through the pipe and back, with a busy machine's margin.
DISPATCH_GRACE_S = 10.0
# Worker pools that break this many times in a row, with no page extracted between, are not coming back.
MAX_POOL_RESTARTS = 3
# Workers are recycled after this many documents, so slow leaks in parsers stay bounded.
MAX_DOCUMENTS_PER_WORKER = 500
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


@dataclass
class _Worker:
    """One extraction process, as a pebble pool of one: pebble times it out, kills and replaces it.

    `pool` is None once retired (after a cancelled page or a broken pool); a new one is started
    before this worker's next page. `warming` is the warm-up page pebble is still running.
    """

    pool: pebble.ProcessPool | None
    warming: Future[None] | None = None


class ExtractionPool:
    """Worker processes that extract documents, each page under the time and memory limits.

    Why one pebble pool per process, each given one page at a time: pebble blames a worker's
    death on the task it last saw start there. With several pages queued, that can be the page
    *before* the crash, whose result was still in the pipe (measured: a PDF reported "crashed",
    the crashing page reported "timed out"). One page in flight per process makes the blame
    exact, and leaves nothing queued inside pebble that a dying worker could orphan.

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
        # the watchdog: pebble answers within the time limit, plus its kill grace, plus the pipe both ways
        self._answer_within_s = timeout_s + KILL_GRACE_S + DISPATCH_GRACE_S
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([*WORKER_PRELOAD, __name__])
        self._in_flight: set[Future[Any]] = set()
        self._retiring: list[threading.Thread] = []
        self._breaks_in_a_row = 0
        self._gave_up = False
        self._closed = False
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._workers = [self._started_worker() for _ in range(workers)]
        self._idle = deque(self._workers)

    def _new_pebble_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=1,
            max_tasks=MAX_DOCUMENTS_PER_WORKER,
            initializer=start_worker,
            initargs=(self.memory_limit_mb * 2**20,),
            context=self._context,
        )

    def _started_worker(self) -> _Worker:
        """Started now (the warm-up page starts the process), while the crawl's first requests are in flight."""
        pool = self._new_pebble_pool()
        return _Worker(pool, pool.schedule(warm_up))

    async def extract(self, body: FetchedBody, title: str) -> Extraction:
        """The document of `body` (and its compressed bytes), or the reason there is none.

        Never raises for what a page does; waits for a free worker first (back-pressure).
        """
        if self._closed:
            raise RuntimeError("the extraction pool was shut down")
        if self._gave_up:
            return Extraction(failure=KEEP_DYING)
        worker = await self._take()
        try:
            return await self._run(worker, body, title)
        finally:
            self._give(worker)

    async def _run(self, worker: _Worker, body: FetchedBody, title: str) -> Extraction:
        for _ in range(2):  # a broken pool is replaced and the page tried once more on the new one
            if self._gave_up:
                break
            if worker.pool is None:
                worker.pool = self._new_pebble_pool()
            if worker.warming is not None:  # its failure, if any, shows when scheduling below
                started, _ = await asyncio.wait({asyncio.wrap_future(worker.warming)}, timeout=self._answer_within_s)
                worker.warming = None
                if not started:
                    self._renew(worker, "the worker did not start")
                    continue
            pool = worker.pool
            try:
                future = pool.schedule(self._job, args=(body, title), timeout=self.timeout_s)
            except RuntimeError:  # pebble refuses work once its pool broke
                self._renew(worker, "the worker pool stopped accepting work")
                continue
            try:
                return await self._outcome(worker, future)
            except BrokenProcessPool as exc:
                self._renew(worker, str(exc) or type(exc).__name__)
        return Extraction(failure=KEEP_DYING)

    async def _outcome(self, worker: _Worker, future: pebble.ProcessFuture[tuple[Document, bytes]]) -> Extraction:
        answer_within_s = self._answer_within_s
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        wrapped = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=answer_within_s)
        except asyncio.CancelledError:
            self._abandon(worker, future)
            raise
        if not done:
            self._abandon(worker, future)
            return Extraction(failure=CRASHED.format(detail=f"no answer from the worker within {answer_within_s:g} s"))
        try:
            document, compressed = wrapped.result()
        except BrokenProcessPool:
            raise
        except TimeoutError:  # pebble's: the worker was killed and replaced
            return Extraction(failure=TIMED_OUT.format(seconds=self.timeout_s))
        except MemoryError:
            return Extraction(failure=OUT_OF_MEMORY.format(megabytes=self.memory_limit_mb))
        except pebble.ProcessExpired as exc:
            return Extraction(failure=CRASHED.format(detail=_death(exc.exitcode)))
        except Exception as exc:  # whatever the job raised in the worker
            logger.debug("extraction job raised", exc_info=exc)
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Extraction(failure=CRASHED.format(detail=detail[:MAX_DETAIL_CHARS]))
        self._breaks_in_a_row = 0
        return Extraction(document=document, compressed_body=compressed)

    def _abandon(self, worker: _Worker, future: Future[Any]) -> None:
        """The caller stopped waiting: cancel the page and retire its process, so no later page can land on it."""
        future.cancel()
        self._retire(worker)

    def _renew(self, worker: _Worker, why: str) -> None:
        """A broken pebble pool: retire it; the next page starts a new one, unless pools keep breaking."""
        self._retire(worker)
        self._breaks_in_a_row += 1
        if self._breaks_in_a_row > MAX_POOL_RESTARTS:
            logger.error("extraction workers broke %d times in a row (last: %s); extracting nothing more",
                         self._breaks_in_a_row, why)
            self._gave_up = True
        else:
            logger.warning("extraction worker pool broke (%s); starting a new one", why)

    def _retire(self, worker: _Worker) -> None:
        pool, worker.pool, worker.warming = worker.pool, None, None
        if pool is None:
            return
        pool.stop()
        # joining waits for pebble to kill the process (up to its 3 s SIGTERM grace): not on the event loop
        joiner = threading.Thread(target=pool.join, name="linklens-retire-extractor", daemon=True)
        joiner.start()
        self._retiring.append(joiner)

    async def _take(self) -> _Worker:
        if self._idle:
            return self._idle.popleft()
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a worker just as we were cancelled
                self._give(waiter.result())
            raise

    def _give(self, worker: _Worker) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def shutdown(self, cancel_futures: bool = True) -> None:
        """Stop every worker. With `cancel_futures`, pages in flight are dropped; otherwise finished first."""
        self._closed = True
        if cancel_futures:
            for future in list(self._in_flight):
                future.cancel()
        pools = [w.pool for w in self._workers if w.pool is not None]
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
