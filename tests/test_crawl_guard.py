"""One guard per link: an exception at any step of one link's crawl fails that link, not the crawl.

Each test replaces one real step (robots.txt, the fetch, the archive lookup, extraction, storing)
with one that raises for a single victim link and calls the real step for every other link. The
crawl must end (under a deadline, so a hang fails the test instead of stalling the suite), the
victim `failed` with the exception named, and its neighbours in their usual states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest import crawler
from ingest.archive import Archive
from ingest.crawler import Crawler
from ingest.fetcher import Fetcher
from ingest.models import CrawlOutcome
from ingest.robots import RobotsCache
from ingest.settings import Settings
from ingest.sources import load_list
from ingest.store import Store
from tests.fixtureweb import FixtureWeb

CRAWL_DEADLINE_S = 60.0


class Injected(RuntimeError):
    """The exception the tests inject; its name must reach the victim's reason."""


def small_list(web: FixtureWeb, path: Path) -> tuple[Path, dict[str, str]]:
    """Three good articles on two hosts and one 404 (the only link that reaches the archive lookup)."""
    good = [u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u][:3]
    missing = next(u for u in web.expected_states() if u.endswith("/faults/missing-page"))
    lines = ["# Guarded", "", "## Links", ""] + [f"* [Link {i}]({u})" for i, u in enumerate([*good, missing])]
    path.write_text("\n".join(lines) + "\n")
    return path, {**{u: "ok" for u in good}, missing: "dead"}


def crawl(settings: Settings, list_file: Path) -> dict[str, dict[str, object]]:
    with Store.open(settings.store_path) as store:
        store.add_links(load_list(str(list_file), settings).links)
        asyncio.run(asyncio.wait_for(Crawler(settings, store).crawl(), CRAWL_DEADLINE_S))
        return {str(r["url"]): r for r in store.link_rows()}


def raising_for(victim: str, real: Callable[..., Any], url_of: Callable[..., str]) -> Callable[..., Any]:
    """`real`, except that it raises Injected when called for `victim`."""
    if asyncio.iscoroutinefunction(real):
        async def async_step(*args: Any, **kwargs: Any) -> Any:
            if url_of(*args, **kwargs) == victim:
                raise Injected("injected for the test")
            return await real(*args, **kwargs)
        return async_step

    def step(*args: Any, **kwargs: Any) -> Any:
        if url_of(*args, **kwargs) == victim:
            raise Injected("injected for the test")
        return real(*args, **kwargs)
    return step


def assert_only_the_victim_failed(report: dict[str, dict[str, object]], expected: dict[str, str], victim: str,
                                  stage: str) -> None:
    assert report[victim]["state"] == "failed", report[victim]
    reason = str(report[victim]["reason"])
    assert f"unexpected error while {stage}" in reason and "Injected" in reason, reason
    neighbours = {u: report[u]["state"] for u in expected if u != victim}
    assert neighbours == {u: s for u, s in expected.items() if u != victim}


@pytest.fixture
def small(web: FixtureWeb, crawl_settings: Settings, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return small_list(web, tmp_path / "guarded.md")


def good_victim(expected: dict[str, str]) -> str:
    return next(u for u, s in expected.items() if s == "ok")


def test_an_exception_in_robots_txt_fails_only_that_link(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    list_file, expected = small
    victim = good_victim(expected)
    monkeypatch.setattr(RobotsCache, "check", raising_for(victim, RobotsCache.check, lambda self, url: url))
    assert_only_the_victim_failed(crawl(crawl_settings, list_file), expected, victim, "fetching")


def test_an_exception_in_the_fetch_fails_only_that_link(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    list_file, expected = small
    victim = good_victim(expected)
    monkeypatch.setattr(Fetcher, "fetch", raising_for(victim, Fetcher.fetch, lambda self, url, *a, **k: url))
    assert_only_the_victim_failed(crawl(crawl_settings, list_file), expected, victim, "fetching")


def test_an_exception_in_the_archive_lookup_fails_only_that_link(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    list_file, expected = small
    victim = next(u for u, s in expected.items() if s == "dead")
    monkeypatch.setattr(Archive, "closest", raising_for(victim, Archive.closest, lambda self, url, attempts: url))
    assert_only_the_victim_failed(crawl(crawl_settings, list_file), expected, victim, "fetching")


def test_an_exception_in_extraction_fails_only_that_link_and_keeps_its_body(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    list_file, expected = small
    victim = good_victim(expected)
    real = crawler.extract_page
    monkeypatch.setattr(crawler, "extract_page",
                        raising_for(victim, real, lambda executor, outcome, title: outcome.body.url))
    report = crawl(crawl_settings, list_file)
    assert_only_the_victim_failed(report, expected, victim, "extracting")
    with Store.open(crawl_settings.store_path) as store:
        assert store.body(int(report[victim]["id"])) is not None  # type: ignore[arg-type]
        assert store.document(int(report[victim]["id"])) is None  # type: ignore[arg-type]


def test_an_exception_while_storing_fails_only_that_link(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    list_file, expected = small
    victim = good_victim(expected)
    real = Store.record_outcome

    def url_of(self: Store, link_id: int, outcome: CrawlOutcome) -> str:
        return str(self.link(link_id)["url"])

    monkeypatch.setattr(Store, "record_outcome", raising_for(victim, real, url_of))
    assert_only_the_victim_failed(crawl(crawl_settings, list_file), expected, victim, "storing")


def test_a_failing_progress_callback_does_not_stop_the_crawl(
        small: tuple[Path, dict[str, str]], crawl_settings: Settings) -> None:
    list_file, expected = small
    calls: list[int] = []

    def progress(p: object) -> None:
        calls.append(1)
        raise Injected("a progress bar that breaks")

    with Store.open(crawl_settings.store_path) as store:
        store.add_links(load_list(str(list_file), crawl_settings).links)
        asyncio.run(asyncio.wait_for(Crawler(crawl_settings, store).crawl(progress=progress), CRAWL_DEADLINE_S))
        states = {str(r["url"]): r["state"] for r in store.link_rows()}
    assert states == expected and len(calls) == len(expected)
