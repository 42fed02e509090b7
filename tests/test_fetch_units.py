"""Small pieces of the crawler: Retry-After, snapshot URLs, host interleaving, meta refresh, validators, pools."""

from __future__ import annotations

import email.utils
import time

import httpx

from ingest.archive import raw_snapshot_url
from ingest.crawler import interleave_by_host
from ingest.fetcher import meta_refresh_target, parse_retry_after, safe_validator
from ingest.host_pools import HostClients
from ingest.settings import Settings


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= (parse_retry_after(in_ten) or 0) <= 10.5
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_raw_snapshot_url_uses_the_id_form() -> None:
    url = "http://web.archive.org/web/20150101000000/http://example.com/a/b"
    assert raw_snapshot_url(url) == "http://web.archive.org/web/20150101000000id_/http://example.com/a/b"
    already = "http://web.archive.org/web/20150101000000id_/http://example.com/"
    assert raw_snapshot_url(already) == already


def test_interleave_round_robins_hosts_in_list_order() -> None:
    items = [(1, "http://a.test/1"), (2, "http://a.test/2"), (3, "http://a.test/3"), (4, "http://b.test/1"),
             (5, "http://c.test/1"), (6, "http://b.test/2")]
    assert interleave_by_host(items) == [1, 4, 5, 2, 6, 3]


def test_meta_refresh_is_a_redirect_only_when_immediate_and_elsewhere() -> None:
    page = b'<html><head><meta http-equiv="refresh" content="0; url=/next"></head></html>'
    assert meta_refresh_target("http://a.test/x", "text/html", page) == "http://a.test/next"
    slow = page.replace(b"0; url", b"30; url")
    assert meta_refresh_target("http://a.test/x", "text/html", slow) is None  # meant to be read first
    assert meta_refresh_target("http://a.test/next", "text/html", page) is None  # reloads itself
    assert meta_refresh_target("http://a.test/x", "application/pdf", page) is None
    ftp = page.replace(b"/next", b"ftp://a.test/file")
    assert meta_refresh_target("http://a.test/x", "text/html", ftp) is None


def test_only_printable_ascii_validators_are_sent_back() -> None:
    assert safe_validator('"abc-123"') == '"abc-123"'
    assert safe_validator('"café"') is None
    assert safe_validator('"a\nb"') is None
    assert safe_validator(None) is None


async def test_idle_host_pools_are_closed_least_recently_used_first_busy_ones_never() -> None:
    settings = Settings(max_host_pools=2)
    async with HostClients(settings) as clients:
        async with clients.lease(httpx.URL("http://a.test/")) as busy:
            async with clients.lease(httpx.URL("http://b.test/")):
                pass
            async with clients.lease(httpx.URL("http://c.test/")):
                pass
            assert clients.open_pools == 2 and clients.closed_pools == 1  # b went, a is in use
            assert not busy.is_closed
        async with clients.lease(httpx.URL("http://d.test/")):
            pass
        assert clients.open_pools == 2 and clients.closed_pools == 2
        assert busy.is_closed  # a was then the least recently used idle pool
