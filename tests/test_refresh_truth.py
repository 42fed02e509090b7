"""A refresh keeps the truth: validators go only with the text they validate, and an empty or
non-text answer to a refresh keeps the last good text with an honest state and reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from cli.main import app
from ingest.models import CrawlOutcome, Document, FetchedBody, LinkState, ListedLink, ListPlacement
from ingest.settings import Settings
from ingest.store import Store
from tests.fixtureweb import FixtureWeb
from tests.fixtureweb.server import Request, Response

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WORDLESS = b"<!doctype html><html><head><title>Loading</title></head><body><div id='app'></div></body></html>"


class ChangingPage:
    """One route of the fixture web whose answer the test changes between crawls.

    `good` serves the article (the fixture web adds its ETag); `wordless` well-formed HTML with no
    article (a page now drawn by scripts); `empty` answers 200 with no body,
    under a new ETag (the fixture's hash of nothing) or under the good page's own ETag; `png` an
    image labelled text/html; `not_modified` answers 304 to any conditional request. Every
    If-None-Match received is kept.
    """

    def __init__(self, good: Response) -> None:
        self.good = good
        self.mode = "good"
        self.same_etag: str | None = None
        self.if_none_match: list[str | None] = []

    def __call__(self, req: Request) -> Response:
        self.if_none_match.append(req.headers.get("if-none-match"))
        if self.mode == "good":
            return self.good
        if self.mode == "png":
            return Response(200, PNG, "text/html")
        if self.mode == "wordless":
            return Response(200, WORDLESS, "text/html; charset=utf-8")
        if self.mode == "not_modified" and req.headers.get("if-none-match"):
            return Response(304, b"", None, [("ETag", req.headers["if-none-match"])])
        if self.same_etag is None:
            return Response(200, b"", "text/html; charset=utf-8")

        async def nothing() -> AsyncIterator[bytes]:  # a stream: the fixture adds no ETag of its own
            yield b""

        return Response(200, b"", "text/html; charset=utf-8", [("ETag", self.same_etag)], stream=nothing)


def crawl(list_file: Path, *flags: str) -> None:
    result = runner.invoke(app, ["crawl", str(list_file), "--json", *flags])
    assert result.exit_code == 0, result.output


def victim_row(settings: Settings, url: str) -> dict[str, Any]:
    with Store.open(settings.store_path) as store:
        row = next(r for r in store.link_rows() if r["url"] == url)
        link_id = row["id"]
        assert isinstance(link_id, int)
        link = store.link(link_id)
        doc = store.document(link_id)
        return {**row, "etag": link["etag"], "words": len(doc.text.split()) if doc else 0}


@pytest.mark.parametrize("etag", ["new", "same"])
def test_an_empty_refresh_keeps_the_text_and_a_later_304_confirms_the_words(
        web: FixtureWeb, crawl_settings: Settings, list_file: Path, etag: str) -> None:
    victim = next(u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u)
    where = urlsplit(victim)
    article = web._routes[(where.netloc, where.path)](Request("GET", where.path, "HTTP/1.1", {}, where.netloc))
    assert isinstance(article, Response)
    page = ChangingPage(article)
    web._route(victim, page)
    crawl(list_file)
    good = victim_row(crawl_settings, victim)
    assert good["state"] == "ok" and good["words"] > 40, good
    good_etag = good["etag"]
    assert isinstance(good_etag, str) and good_etag

    page.mode = "empty"
    page.same_etag = good_etag if etag == "same" else None
    crawl(list_file, "--refresh")
    emptied = victim_row(crawl_settings, victim)
    assert emptied["state"] == "failed", emptied
    assert str(emptied["reason"]).startswith("nothing to index: an empty body")
    assert f"keeping the text fetched on {time.strftime('%Y-%m-%d')}" in str(emptied["reason"])
    assert emptied["words"] == good["words"]
    assert emptied["etag"] == good_etag  # the validator of the text we kept, not of the empty answer

    page.mode = "not_modified"
    crawl(list_file, "--refresh")
    assert page.if_none_match[-1] == good_etag
    confirmed = victim_row(crawl_settings, victim)
    assert confirmed["state"] == "ok" and "not modified" in str(confirmed["reason"]), confirmed
    assert confirmed["words"] == good["words"]
    with Store.open(crawl_settings.store_path) as store:
        assert victim in {a.url for a in store.articles() if a.document and a.document.text.strip()}


def test_a_non_text_or_wordless_refresh_keeps_the_text(web: FixtureWeb, crawl_settings: Settings,
                                                       list_file: Path) -> None:
    """An image labelled text/html ends `unsupported`, HTML that extracts to no words `failed`: both keep
    the text, its validator and the body it came from."""
    victim = next(u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u)
    crawl(list_file)
    good = victim_row(crawl_settings, victim)
    assert good["words"] > 40, good
    page = ChangingPage(Response())
    web._route(victim, page)
    kept = f"; keeping the text fetched on {time.strftime('%Y-%m-%d')}"
    for mode, state, reason in [("png", "unsupported", "not text: a PNG image"),
                                ("wordless", "failed", "the page now yields no text")]:
        page.mode = mode
        crawl(list_file, "--refresh")
        row = victim_row(crawl_settings, victim)
        assert row["state"] == state, row
        assert str(row["reason"]).startswith(reason) and str(row["reason"]).endswith(kept), row
        assert row["words"] == good["words"] and row["etag"] == good["etag"]
        with Store.open(crawl_settings.store_path) as store:
            body = store.body(row["id"])
            assert body is not None and b"<p" in body.body  # still the article the text came from


def listed(url: str) -> list[ListedLink]:
    return [ListedLink(url, [ListPlacement(("Reading",), "A title", 0)])]


def test_validators_are_stored_only_with_text_they_validate(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite3") as store:
        store.add_links(listed("http://x/1"))
        words = Document(title="t", text="some words " * 30, kind="html")
        good = FetchedBody("http://x/1", "text/html", b"<p>words</p>", False, etag='"good"',
                           last_modified="Wed, 01 Jan 2020 00:00:00 GMT")
        store.record_outcome(1, CrawlOutcome(LinkState.OK, "", body=good, document=words))
        assert store.link(1)["etag"] == '"good"' and store.kept_text_date(1) is not None

        # a new body whose extraction gave no text: its validators are not kept, nor the old ones
        blank = FetchedBody("http://x/1", "text/html", b"<p></p>", False, etag='"blank"')
        store.record_outcome(1, CrawlOutcome(LinkState.OK, "", body=blank,
                                             document=Document(title="t", text="", kind="thin", thin=True)))
        assert store.link(1)["etag"] is None and store.link(1)["last_modified"] is None
        assert store.kept_text_date(1) is None  # no text: a refresh asks unconditionally

        # a new body with text and no validators clears the old ones (they described another body)
        store.record_outcome(1, CrawlOutcome(LinkState.OK, "", body=good, document=words))
        plain = FetchedBody("http://x/1", "text/html", b"<p>other words</p>", False)
        store.record_outcome(1, CrawlOutcome(LinkState.OK, "", body=plain, document=words))
        assert store.link(1)["etag"] is None and store.link(1)["last_modified"] is None
