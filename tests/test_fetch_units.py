"""Small pure pieces of the crawler: Retry-After parsing, snapshot URLs, host interleaving."""

from __future__ import annotations

import email.utils
import time

from ingest.archive import raw_snapshot_url
from ingest.crawler import interleave_by_host
from ingest.fetcher import parse_retry_after


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
