"""Extraction in isolation, on the real pebble pool with forkserver workers (no mocks).

Each test hands the pool pages that hang it, crash it, blow its memory or keep libxml2 busy
in C, next to good pages, and asserts that every page ends with its own outcome, the good
ones extracted, and that the pool still works afterwards (dead workers were replaced).
"""

from __future__ import annotations

import asyncio
import time
import zlib

import psutil
import pytest

from ingest.extraction_pool import KEEP_DYING, MAX_POOL_RESTARTS, Extraction, ExtractionPool
from ingest.models import FetchedBody
from tests.extraction_jobs import (
    CRASH,
    CRASHED,
    DIE_IDLE,
    DIE_IDLE_AFTER_S,
    HANG,
    HOG,
    RAISE,
    SLOW_RESULT,
    attribute_bomb_page,
    marked_page,
    misbehaving_job,
    nested_page,
)
from tests.extraction_web import BOMB_ATTRIBUTES, NESTED_DEPTH, TEST_MEMORY_MB, TEST_TIMEOUT_S

# No test here may wait longer than this for the pool: a lost page fails the test instead of hanging the suite.
BOUND_S = 90.0
GOOD_WORDS = "Sentence 29 about queues"
PEBBLE_NOTICES_S = 1.0  # pebble's manager looks at its workers every 0.1 s


def extract_all(pool: ExtractionPool, pages: dict[str, str]) -> dict[str, Extraction]:
    async def run() -> list[Extraction]:
        jobs = (pool.extract(FetchedBody(f"http://blog.test/{name}", "text/html; charset=utf-8", html.encode(),
                                         False), name) for name, html in pages.items())
        return await asyncio.wait_for(asyncio.gather(*jobs), BOUND_S)

    return dict(zip(pages, asyncio.run(run()), strict=True))


def test_pages_that_hang_crash_raise_or_hog_end_with_their_reason_and_the_others_are_extracted() -> None:
    pages = {
        "good-1": marked_page("", "First good page"),
        "hang": marked_page(HANG, "Hangs"),
        "crash": marked_page(CRASH, "Crashes"),
        "hog": marked_page(HOG, "Hogs"),
        "raise": marked_page(RAISE, "Raises"),
        "good-2": marked_page("", "Second good page"),
    }
    with ExtractionPool(2, TEST_TIMEOUT_S, TEST_MEMORY_MB, job=misbehaving_job) as pool:
        results = extract_all(pool, pages)
        failures = {name: r.failure for name, r in results.items()}
        assert CRASHED.fullmatch(failures["crash"] or ""), failures["crash"]
        assert {**failures, "crash": "crashed"} == {
            "good-1": None,
            "hang": f"extraction timed out after {TEST_TIMEOUT_S:g} s",
            "crash": "crashed",
            "hog": f"extraction ran out of memory (over the {TEST_MEMORY_MB} MB limit per worker)",
            "raise": "extractor crashed (ValueError: a parser bug on this page)",
            "good-2": None,
        }
        for name in ("good-1", "good-2"):
            extraction = results[name]
            assert extraction.document is not None and GOOD_WORDS in extraction.document.text, name
            assert extraction.compressed_body is not None
            assert zlib.decompress(extraction.compressed_body) == pages[name].encode()  # compressed in the worker
        for name in ("hang", "crash", "hog", "raise"):
            assert results[name].document is None and results[name].compressed_body is None
        # Both original workers are gone (one hung and was killed, one exited); only replacements can answer.
        again = extract_all(pool, {f"after-{i}": marked_page("", f"After {i}") for i in range(4)})
        assert all(r.failure is None and r.document is not None for r in again.values()), again


def test_a_crash_is_blamed_on_the_page_that_caused_it_not_on_the_one_before() -> None:
    """One process, two pages in flight: a good page whose result is slow to receive, then a crash.
    pebble alone notices the dead worker while that result is still arriving and blames the good page
    (and the crashing page waits out the time limit, then reads "timed out")."""
    pages: dict[str, str] = {}
    for i in range(3):
        pages[f"good-{i}"] = marked_page(SLOW_RESULT, f"Good {i}")
        pages[f"crash-{i}"] = marked_page(CRASH, f"Crash {i}")
    with ExtractionPool(1, TEST_TIMEOUT_S, TEST_MEMORY_MB, job=misbehaving_job) as pool:
        results = extract_all(pool, pages)
    failures = {name: r.failure for name, r in results.items()}
    assert {name for name, failure in failures.items() if failure is not None} == {
        name for name in pages if name.startswith("crash")}, failures
    assert all(CRASHED.fullmatch(failures[name] or "") for name in pages if name.startswith("crash")), failures
    goods = [r.document for name, r in results.items() if name.startswith("good")]
    assert all(document is not None and document.sitename == "received slowly" for document in goods)


def test_a_parse_stuck_in_c_is_killed_at_the_time_limit_and_its_neighbour_extracted() -> None:
    """The attribute bomb keeps libxml2 busy for minutes inside C, where SIGTERM cannot reach Python."""
    pages = {"bomb": attribute_bomb_page(BOMB_ATTRIBUTES), "good": marked_page("", "Good page")}
    with ExtractionPool(2, TEST_TIMEOUT_S, TEST_MEMORY_MB) as pool:  # the production job: real trafilatura
        extract_all(pool, {f"warm-{n}": marked_page("", "Warm") for n in range(4)})  # every worker started
        workers = set(psutil.Process().children(recursive=True))
        results = extract_all(pool, pages)
        assert results["bomb"].failure == f"extraction timed out after {TEST_TIMEOUT_S:g} s"
        good = results["good"].document
        assert good is not None and GOOD_WORDS in good.text
        # the stuck worker was killed (SIGKILL after pebble's grace), not left burning a core
        gone = workers - set(psutil.Process().children(recursive=True))
        assert len(gone) == 1, gone
        assert not [w for w in gone if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
        after = extract_all(pool, {"next": marked_page("", "Next")})["next"]
        assert after.document is not None and GOOD_WORDS in after.document.text


def test_tens_of_thousands_of_nested_elements_go_through_the_real_extractor() -> None:
    with ExtractionPool(1, TEST_TIMEOUT_S * 10, TEST_MEMORY_MB) as pool:
        results = extract_all(pool, {"nested": nested_page(NESTED_DEPTH), "good": marked_page("", "Good")})
    nested = results["nested"]
    # libxml2 stops building the tree at its depth limit: the page ends a thin document (its <title>), not a hang
    assert nested.failure is None and nested.document is not None
    assert nested.document.thin and nested.document.title == "Nested"
    assert results["good"].document is not None and GOOD_WORDS in results["good"].document.text


def test_a_broken_pool_is_replaced_and_the_next_page_extracted(caplog: pytest.LogCaptureFixture) -> None:
    """A worker that dies between pages makes pebble declare the whole pool broken; a new one takes over."""
    with ExtractionPool(1, TEST_TIMEOUT_S, TEST_MEMORY_MB, job=misbehaving_job) as pool:
        first = extract_all(pool, {"dies-after": marked_page(DIE_IDLE, "Dies after answering")})["dies-after"]
        assert first.failure is None and first.document is not None
        time.sleep(DIE_IDLE_AFTER_S + PEBBLE_NOTICES_S)
        after = extract_all(pool, {"next": marked_page("", "Next")})["next"]
    assert after.failure is None and after.document is not None and GOOD_WORDS in after.document.text
    assert any("extraction worker pool broke" in r.getMessage() for r in caplog.records)


def test_workers_that_die_before_answering_again_and_again_end_every_page_with_a_reason() -> None:
    """Under an 8 MB address-space limit a worker dies receiving a 4 MB page, before it can answer;
    its pool breaks, is replaced, breaks again. Past the restart budget, pages get the reason at once."""
    big_page = marked_page("", "Big page") + "<!--" + "x" * 4 * 2**20 + "-->"
    with ExtractionPool(1, TEST_TIMEOUT_S, memory_limit_mb=8) as pool:
        results = extract_all(pool, {f"page-{i}": big_page for i in range(MAX_POOL_RESTARTS + 1)})
    assert {r.failure for r in results.values()} == {KEEP_DYING}
