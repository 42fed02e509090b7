"""Extraction in isolation: untrusted pages are parsed in worker processes that can be killed.

A parser is the one place where a hostile page runs our CPU and memory: lxml can spin
for minutes inside C on an attribute bomb, a runaway parse can eat the machine, a bug
can segfault. So extraction runs in a pebble `ProcessPool`, and:

- each document has a time limit (`LINKLENS_EXTRACT_TIMEOUT_S`); past it pebble kills
  the worker (SIGTERM, then SIGKILL for one stuck in C) and starts a new one;
- each worker has an address-space limit (`LINKLENS_EXTRACT_MEMORY_MB`, RLIMIT_AS), so
  a runaway parse gets MemoryError instead of the machine's memory;
- a worker that dies (segfault, `os._exit`, the kernel's OOM killer) is replaced by
  pebble, and the page it held ends with the reason;
- if the pool as a whole breaks, a new one takes its place (a bounded number of times).

Guarantee: `ExtractionPool.extract` always returns, with a document or a failure reason in
words (`TIMED_OUT`, `CRASHED`, `OUT_OF_MEMORY`), never an exception for what a page did;
only cancellation of the caller propagates. A watchdog bounds every wait, so even a task
the pool lost cannot leave the caller waiting forever.

Kept from the plain ProcessPoolExecutor this replaces: workers fork from a forkserver that
has already imported trafilatura (cheap to start and to replace), they start at
construction (warm before the first page arrives), and they compress the body for the
store along with extracting it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pebble

from ingest.extract_job import WORKER_PRELOAD, extract_and_compress, warm_up
from ingest.models import Document, FetchedBody

logger = logging.getLogger(__name__)

# The reasons a link's extraction ends without a document; the crawl records them as `failed`.
TIMED_OUT = "extraction timed out after {seconds:g} s"
CRASHED = "extractor crashed ({detail})"
OUT_OF_MEMORY = "extraction ran out of memory (over the {megabytes} MB limit per worker)"
EXTRACTION_FAILURE_PREFIXES = ("extraction timed out", "extractor crashed", "extraction ran out of memory")

# pebble stops a worker with SIGTERM, waits 3 s, then SIGKILLs it; its manager loop ticks every 0.1 s.
KILL_GRACE_S = 5.0
# Time to pickle a capped body (10 MB) through the pipe and back, with a busy machine's margin.
DISPATCH_GRACE_S = 10.0
# A pool that breaks this many times is not coming back (e.g. workers cannot even start).
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


class ExtractionPool:
    """Worker processes that extract documents, each page under a time and memory limit.

    `job` is what a worker runs per page; production uses `extract_and_compress`, tests pass
    a function that hangs or crashes on purpose. It must be importable by name (pickled by
    reference) and return `(Document, compressed body)`.
    """

    def __init__(self, workers: int, timeout_s: float, memory_limit_mb: int, job: Job = extract_and_compress) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._job = job
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([*WORKER_PRELOAD, __name__])
        self._pending: set[Future[object]] = set()
        self._retired: list[pebble.ProcessPool] = []
        self._restarts = 0
        self._lock = threading.Lock()  # pool replacement may race between event-loop callbacks and shutdown
        self._pool: pebble.ProcessPool | None = self._start_pool()

    def _start_pool(self) -> pebble.ProcessPool:
        """A new pebble pool with its workers started now, while the crawl's first requests are in flight."""
        pool = pebble.ProcessPool(
            max_workers=self.workers,
            max_tasks=MAX_DOCUMENTS_PER_WORKER,
            initializer=start_worker,
            initargs=(self.memory_limit_mb * 2**20,),
            context=self._context,
        )
        for _ in range(self.workers):
            self._track(pool.schedule(warm_up))
        return pool

    def _track(self, future: Future[object]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def extract(self, body: FetchedBody, title: str) -> Extraction:
        """The document of `body` (and its compressed bytes), or the reason there is none. Never raises."""
        for _ in range(2):  # a broken pool is replaced and the page tried once more on the new one
            pool = self._pool
            if pool is None:
                break
            try:
                future = pool.schedule(self._job, args=(body, title), timeout=self.timeout_s)
            except RuntimeError:  # pebble refuses work once its pool broke
                self._replace(pool, "the pool stopped accepting work")
                continue
            # Every document ahead of this one takes at most the time limit plus the kill grace.
            ahead = len(self._pending) // self.workers + 1
            self._track(future)  # type: ignore[arg-type]
            try:
                return await self._outcome(future, ahead * (self.timeout_s + KILL_GRACE_S) + DISPATCH_GRACE_S)
            except BrokenProcessPool as exc:
                self._replace(pool, str(exc) or type(exc).__name__)
        return Extraction(failure=CRASHED.format(detail="the extraction workers keep dying; see the log"))

    async def _outcome(self, future: pebble.ProcessFuture[tuple[Document, bytes]],
                       answer_within_s: float) -> Extraction:
        wrapped = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=answer_within_s)
        finally:
            if not future.done():  # our caller gave up, or the watchdog fired: free the worker
                future.cancel()
        if not done:
            return Extraction(failure=CRASHED.format(detail=f"no answer from the workers within {answer_within_s:g} s"))
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
        return Extraction(document=document, compressed_body=compressed)

    def _replace(self, broken: pebble.ProcessPool, why: str) -> None:
        """Retire a broken pool and start a new one, unless pools keep breaking."""
        with self._lock:
            if self._pool is not broken:
                return  # another page already replaced it
            self._retired.append(broken)
            broken.stop()
            self._restarts += 1
            if self._restarts > MAX_POOL_RESTARTS:
                logger.error("extraction pool broke %d times (last: %s); extracting nothing more", self._restarts, why)
                self._pool = None
                return
            logger.warning("extraction pool broke (%s); starting a new one", why)
            self._pool = self._start_pool()

    def shutdown(self, cancel_futures: bool = True) -> None:
        """Stop every worker. With `cancel_futures`, pages not yet extracted are dropped; otherwise finished first."""
        with self._lock:
            pool, self._pool = self._pool, None
        if cancel_futures:
            for future in list(self._pending):
                future.cancel()
        if pool is not None:
            if cancel_futures:
                pool.stop()
            else:
                pool.close()
            pool.join()
        for old in self._retired:
            old.join()
        self._retired.clear()

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
