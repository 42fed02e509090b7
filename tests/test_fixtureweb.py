"""Self-tests of the fixture web: if these fail, crawler test failures mean nothing."""

from __future__ import annotations

import gzip
import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtureweb import (
    ARCHIVE_TIMESTAMP,
    BOILERPLATE_MARKERS,
    CP1252_ARTICLE,
    DEFAULT_ARTICLES_PATH,
    LATIN1_ARTICLE,
    SAMPLE_ARTICLES,
    STATES,
    FixtureWeb,
    load_fixture_articles,
    load_sysdesign_articles,
)

REPO = Path(__file__).resolve().parent.parent
# Longer than any test waits: a request still in flight after it was cut short by stop(), not by time.
STALL_S = 120.0
IN_FLIGHT_TIMEOUT_S = 30.0


@pytest.fixture
def web() -> Iterator[FixtureWeb]:
    with FixtureWeb(SAMPLE_ARTICLES, n_hosts=4, slow_s=5.0) as w:
        yield w


def fault_url(web: FixtureWeb, name: str) -> str:
    return next(f.url for f in web.faults() if f.name == name)


def test_article_page_has_content_and_boilerplate(web: FixtureWeb) -> None:
    art = SAMPLE_ARTICLES[1]
    url = web.article_urls()[art.slug]
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<html lang="en">' in page and f"<title>{html.escape(art.title)}</title>" in page
    assert 'property="og:title"' in page and 'property="article:published_time"' in page
    assert 'name="author"' in page and 'name="description"' in page
    article = page[page.index("<article>") : page.index("</article>")]
    assert f"<h1>{html.escape(art.title)}</h1>" in article
    for p in art.paragraphs:
        assert f"<p>{html.escape(p)}</p>" in article
    for marker in BOILERPLATE_MARKERS[:5]:
        assert marker in page and marker not in article
    assert page.count('<li class="comment">') in (2, 3)
    assert web.hits(url) == 1 and web.hits(url + "#frag") == 1


def test_hosts_are_distinct_and_articles_round_robin(web: FixtureWeb) -> None:
    hosts = {httpx.URL(u).host for u in web.host_urls}
    assert len(hosts) == 4 and httpx.URL(web.archive_url).host not in hosts
    post_hosts = {httpx.URL(u).host for u in web.article_urls().values() if "/posts/" in u}
    assert len(post_hosts) == 3  # 3 sample articles over 4 hosts


def test_conditional_get_answers_304(web: FixtureWeb) -> None:
    url = web.article_urls()[SAMPLE_ARTICLES[0].slug]
    with httpx.Client() as c:
        first = c.get(url)
        etag, last_modified = first.headers["etag"], first.headers["last-modified"]
        assert c.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert c.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
        assert c.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
        assert c.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert [r.status for r in web.request_log() if r.url == url] == [200, 304, 304, 200, 200]


def test_503_then_200_and_429_retry_after(web: FixtureWeb) -> None:
    with httpx.Client() as c:
        u = fault_url(web, "flaky-503")
        assert c.get(u).status_code == 503
        assert c.get(u).status_code == 200
        u = fault_url(web, "retry-429")
        first = c.get(u)
        assert first.status_code == 429 and first.headers["retry-after"] == "1"
        assert c.get(u).status_code == 200
        assert web.hits(u) == 2
        web.reset_counters()
        assert web.hits(u) == 0 and c.get(u).status_code == 429


def test_archive_api_shape_and_replay(web: FixtureWeb) -> None:
    moved = fault_url(web, "archived-404")
    with httpx.Client() as c:
        assert c.get(moved).status_code == 404
        data = c.get(f"{web.archive_url}/wayback/available", params={"url": moved}).json()
        closest = data["archived_snapshots"]["closest"]
        assert data["url"] == moved
        assert closest == {
            "status": "200",
            "available": True,
            "url": f"{web.archive_url}/web/{ARCHIVE_TIMESTAMP}/{moved}",
            "timestamp": ARCHIVE_TIMESTAMP,
        }
        wrapped = c.get(closest["url"]).text
        raw = c.get(f"{web.archive_url}/web/{ARCHIVE_TIMESTAMP}id_/{moved}").text
        assert "Wayback Fixture Toolbar" in wrapped and "Wayback Fixture Toolbar" not in raw
        expected = web.expected_content()[moved]
        assert html.escape(expected.paragraphs[0]) in raw
        for name in ("not-found", "refused", "server-error"):
            none = c.get(f"{web.archive_url}/wayback/available", params={"url": fault_url(web, name)}).json()
            assert none == {"url": fault_url(web, name), "archived_snapshots": {}}
        assert c.get(f"{web.archive_url}/web/{ARCHIVE_TIMESTAMP}id_/{fault_url(web, 'gone')}").status_code == 404


def test_gzip_content_encoding(web: FixtureWeb) -> None:
    with httpx.Client() as c, c.stream("GET", fault_url(web, "gzip")) as r:
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    assert "<article>" in gzip.decompress(raw).decode()


def test_list_markdown_links_every_expected_url(web: FixtureWeb) -> None:
    md = web.list_markdown()
    assert md.startswith("# Awesome Fixture\n")
    assert "## Contents" in md and "- [Faults](#faults)" in md and "### Replication" in md
    assert md.rstrip().splitlines()[-1].startswith("To the extent")
    assert "## License" in md and "[![CC0](" in md and "[![Awesome](" in md
    items = re.findall(r"^\* \[.*\]\((\S+)\)$", md, flags=re.M)
    assert set(items) == set(web.expected_states())
    dupes = [u for u in set(items) if items.count(u) > 1]
    assert dupes == [web.article_urls()[SAMPLE_ARTICLES[0].slug]]
    assert set(web.expected_states().values()) == set(STATES)
    assert httpx.get(web.list_url).text == md


def test_redirects_robots_and_broken_transports(web: FixtureWeb) -> None:
    with httpx.Client(timeout=2.0) as c:
        r = c.get(fault_url(web, "redirect-chain"), follow_redirects=True)
        assert [h.status_code for h in r.history] == [301, 302, 307] and r.status_code == 200
        assert str(r.url) == web.article_urls()[web.expected_content()[fault_url(web, "redirect-chain")].slug]
        with pytest.raises(httpx.TooManyRedirects):
            c.get(fault_url(web, "redirect-loop"), follow_redirects=True)
        assert "Disallow: /private/" in c.get(web.host_urls[0] + "/robots.txt").text
        assert c.get(web.host_urls[1] + "/robots.txt").status_code == 404
        assert c.get(web.host_urls[2] + "/robots.txt").text == "User-agent: *\nDisallow:\n"
        assert web.robots_hits() == 3 and web.robots_hits(web.host_urls[0]) == 1
        with pytest.raises(httpx.ReadError):
            c.get(fault_url(web, "reset"))
        with pytest.raises(httpx.ConnectError):
            c.get(fault_url(web, "refused"))
        with pytest.raises(httpx.ReadTimeout):
            c.get(fault_url(web, "slow"), timeout=0.3)
        assert c.get(fault_url(web, "server-error")).status_code == 500
        assert c.get(fault_url(web, "gone")).status_code == 410


def test_content_type_charset_pdf_and_oversized(web: FixtureWeb) -> None:
    with httpx.Client() as c:
        assert "content-type" not in c.get(fault_url(web, "no-content-type")).headers
        assert c.get(fault_url(web, "wrong-content-type")).headers["content-type"].startswith("text/plain")
        latin = c.get(fault_url(web, "latin1"))
        assert "ISO-8859-1" in latin.headers["content-type"] and "café" in latin.content.decode("iso-8859-1")
        assert LATIN1_ARTICLE.paragraphs[0] in latin.content.decode("iso-8859-1")
        cp = c.get(fault_url(web, "cp1252"))
        assert cp.headers["content-type"] == "text/html" and b'<meta charset="windows-1252">' in cp.content
        assert CP1252_ARTICLE.paragraphs[1] in cp.content.decode("cp1252")
        pdf = c.get(fault_url(web, "pdf"))
        assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
        with c.stream("GET", fault_url(web, "oversized")) as r:
            assert int(r.headers["content-length"]) > 12 * 10**6
            head = b""
            for chunk in r.iter_bytes():  # the article comes first, before the megabytes of padding
                head += chunk
                if len(head) >= 64 * 1024:
                    break
            assert b"<article>" in head[: 64 * 1024]
    pypdf = pytest.importorskip("pypdf")
    text = " ".join(pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text().split())
    art = web.expected_content()[fault_url(web, "pdf")]
    assert " ".join(art.paragraphs[0].split()) in text


def wait_in_flight(web: FixtureWeb, host_url: str) -> None:
    """Until a request has reached `host_url` (the server counts it on arrival)."""
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT_S
    while web.peak_concurrency(host_url) < 1:
        assert time.monotonic() < deadline, f"no request reached {host_url}"
        time.sleep(0.01)


def test_stop_cancels_stalled_request() -> None:
    before = threading.active_count()
    web = FixtureWeb(SAMPLE_ARTICLES, n_hosts=2, slow_s=STALL_S)
    web.start()
    assert httpx.get(web.archive_url + "/wayback/available?url=x", timeout=30).status_code == 200  # serving
    errors: list[BaseException] = []

    def stalled() -> None:
        try:
            httpx.get(fault_url(web, "slow"), timeout=STALL_S * 2)
        except BaseException as e:
            errors.append(e)

    th = threading.Thread(target=stalled)
    th.start()
    wait_in_flight(web, fault_url(web, "slow"))
    web.stop()
    # The stalled request ends long before its STALL_S: stop() cancelled it and closed the connection.
    th.join(STALL_S / 2)
    assert not th.is_alive() and errors  # the client saw the connection close
    assert threading.active_count() == before
    web.stop()  # idempotent


def test_latency_applies_to_article_hosts_only() -> None:
    """While a request to an article host waits out its latency, the archive answers at once."""
    web = FixtureWeb(SAMPLE_ARTICLES, n_hosts=1, latency_s=STALL_S)
    web.start()
    delayed: list[object] = []

    def article_host() -> None:
        try:
            delayed.append(httpx.get(web.host_urls[0] + "/", timeout=STALL_S * 2).status_code)
        except httpx.HTTPError as exc:  # cut short by stop() below
            delayed.append(exc)

    th = threading.Thread(target=article_host)
    try:
        th.start()
        wait_in_flight(web, web.host_urls[0])
        archive = httpx.get(web.archive_url + "/wayback/available?url=x", timeout=STALL_S / 2)
        assert archive.status_code == 200
        assert th.is_alive() and delayed == []  # the article host is still waiting out its latency
        assert [r.status for r in web.request_log()] == [200]
    finally:
        web.stop()
        th.join(STALL_S / 2)
    assert not th.is_alive()


def test_sysdesign_loader_converts_markdown(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    rec = {"id": "x-1", "title": "T", "section": "S", "source_repo": "owner/repo",
           "text": "Intro line.\n\n## A heading\n\n* one\n* two\n\n```\ncode\n```\n\nLast **para**."}
    p.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    [a] = load_sysdesign_articles(p)
    assert a.slug == "x-1" and a.author == "owner" and a.subsection is None
    assert a.paragraphs == ("Intro line.", "A heading", "one\ntwo", "code", "Last **para**.")


@pytest.mark.skipif(not DEFAULT_ARTICLES_PATH.exists(), reason="tests/fixtures/articles.json not written yet")
def test_real_fixture_articles_never_contain_boilerplate_markers() -> None:
    arts = load_fixture_articles()
    assert len({a.slug for a in arts}) == len(arts)
    for a in arts:
        text = " ".join((a.title, *a.paragraphs)).lower()
        assert not [m for m in BOILERPLATE_MARKERS if m.lower() in text], a.slug
    with FixtureWeb(arts, n_hosts=3) as w:
        assert set(w.article_urls()) >= {a.slug for a in arts}  # every article reachable somewhere


def test_main_writes_ready_file_and_exits_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtureweb", "--hosts", "2", "--ready-file", str(ready)],
                            cwd=REPO, stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        assert len(info["host_urls"]) == 2 and info["archive_url"].startswith("http://127.0.0.")
        md = Path(info["list_markdown_path"]).read_text()
        assert all(u in md for u in info["expected_states"])
        assert httpx.get(info["host_urls"][0] + "/robots.txt").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err.decode()
