"""The crawl against the fixture web: every fault ends in the right state, text is clean, politeness holds."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from ingest.crawler import Crawler
from ingest.models import Document, LinkState
from ingest.settings import Settings
from ingest.sources import load_list
from ingest.store import Store
from ingest.urls import normalise_url
from tests.conftest import CrawledWeb
from tests.fixtureweb import BOILERPLATE_MARKERS, CRAWL_DELAY_S, FixtureWeb

runner = CliRunner()


def row_ending(crawled: CrawledWeb, suffix: str) -> dict[str, object]:
    return next(r for u, r in crawled.report.items() if u.endswith(suffix))


def test_every_link_ends_in_its_expected_state(crawled: CrawledWeb) -> None:
    expected = {normalise_url(url): state for url, state in crawled.web.expected_states().items()}
    actual = {url: row["state"] for url, row in crawled.report.items()}
    mismatches = {url: (state, actual.get(url), crawled.report.get(url, {}).get("reason"))
                  for url, state in expected.items() if actual.get(url) != state}
    assert not mismatches, mismatches
    assert set(actual) == set(expected)
    assert all(row["reason"] for row in crawled.report.values())


def test_extracted_text_has_the_article_and_not_the_boilerplate(crawled: CrawledWeb) -> None:
    contents = {normalise_url(u): a for u, a in crawled.web.expected_content().items()}
    with Store.open(crawled.settings.store_path) as store:
        articles = {a.url: a for a in store.articles()}
    checked = 0
    for url, fixture in contents.items():
        doc = articles[url].document
        assert doc is not None, url
        if doc.kind == "video":
            assert doc.thin and fixture.paragraphs[0][:60] in doc.text
            continue
        # every paragraph's opening words survive extraction (PDF text may re-flow lines)
        flat = " ".join(doc.text.split())
        for paragraph in fixture.paragraphs:
            assert " ".join(paragraph.split()[:8]) in flat, (url, paragraph[:60])
        for marker in BOILERPLATE_MARKERS:
            assert marker not in doc.text, (url, marker)
        assert doc.title and not doc.thin
        checked += 1
    assert checked >= 30


def test_non_utf8_pages_decode_correctly(crawled: CrawledWeb) -> None:
    with Store.open(crawled.settings.store_path) as store:
        docs = {a.url: a.document for a in store.articles()}
    for suffix in ("/faults/latin1", "/faults/cp1252-meta"):
        url = next(u for u in docs if u.endswith(suffix))
        fixture = crawled.web.expected_content()[url]
        text = docs[url].text  # type: ignore[union-attr]
        assert fixture.paragraphs[0].split()[0] in text
        assert "\ufffd" not in text and "Ã" not in text  # no mojibake


def test_dead_link_with_a_snapshot_is_archived_with_its_snapshot_url(crawled: CrawledWeb) -> None:
    archived = [row for row in crawled.report.values() if row["state"] == "archived"]
    assert archived
    for row in archived:
        assert str(row["archived_url"]).startswith(crawled.web.archive_url + "/web/")
        assert row["archived_timestamp"]
        assert "web archive" in str(row["reason"])
    dead = [row for row in crawled.report.values() if row["state"] == "dead"]
    assert dead and all(row["archived_url"] is None for row in dead)


def test_redirects_record_the_final_url_and_loops_are_caught(crawled: CrawledWeb) -> None:
    chain = row_ending(crawled, "/faults/redirect-chain")
    assert chain["state"] == "redirected"
    target = next(f for f in crawled.web.faults() if f.name == "redirect-chain").article
    assert target is not None and str(chain["final_url"]).endswith(f"/posts/{target.slug}")
    assert "redirect loop" in str(row_ending(crawled, "/faults/loop-a")["reason"])


def test_retries_only_where_they_help(crawled: CrawledWeb) -> None:
    assert row_ending(crawled, "/faults/flaky-503")["attempts"] == 2
    assert row_ending(crawled, "/faults/rate-limited")["attempts"] == 2
    server_error = row_ending(crawled, "/faults/server-error")
    assert "gave up after 2 attempts" in str(server_error["reason"])
    # a 404 is final: one request for the page (then only the archive is asked)
    missing = next(u for u in crawled.web.expected_states() if u.endswith("/faults/missing-page"))
    assert crawled.web.hits(missing) == 1


def test_retry_after_is_honoured(crawled: CrawledWeb) -> None:
    requests = [r for r in crawled.web.request_log() if r.url.endswith("/faults/rate-limited")]
    assert len(requests) == 2
    assert requests[1].started - requests[0].finished >= 0.95  # Retry-After: 1


def test_robots_disallowed_link_is_never_fetched(crawled: CrawledWeb) -> None:
    private = next(u for u in crawled.web.expected_states() if "/private/" in u)
    assert crawled.report[normalise_url(private)]["state"] == "blocked"
    assert crawled.web.hits(private) == 0
    assert crawled.web.robots_hits(crawled.web.host_urls[0]) == 1  # cached per host


def test_oversized_body_is_cut_and_flagged(crawled: CrawledWeb) -> None:
    row = row_ending(crawled, "/faults/oversized")
    with Store.open(crawled.settings.store_path) as store:
        body = store.body(int(row["id"]))  # type: ignore[arg-type]
    assert body is not None and body.truncated
    assert len(body.body) == crawled.settings.max_body_bytes
    assert "body cut" in str(row["reason"])


def test_per_host_limit_holds(crawled: CrawledWeb) -> None:
    """Overlap of requests per host, from the server's log. The stalled request is left out: the
    crawler abandons it at its timeout, but the server only notices when its own sleep ends."""
    log = [r for r in crawled.web.request_log() if not r.url.endswith("/faults/slow")]
    for host in crawled.web.host_urls:
        events = sorted([(r.started, 1) for r in log if r.url.startswith(host + "/")]
                        + [(r.finished, -1) for r in log if r.url.startswith(host + "/")])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        assert 1 <= peak <= crawled.settings.per_host_concurrency, host


def test_robots_crawl_delay_spaces_requests_to_that_host(crawled: CrawledWeb) -> None:
    host = crawled.web.host_urls[0]
    starts = sorted(r.started for r in crawled.web.request_log()
                    if r.url.startswith(host + "/") and not r.url.endswith("/robots.txt"))
    assert len(starts) >= 5
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # per-host default in the tests is 0.01 s. The times are the server's, read in a thread of this busy
    # process, so one gap may look short by the server's own scheduling delay; the span cannot.
    assert starts[-1] - starts[0] >= (len(starts) - 1) * CRAWL_DELAY_S * 0.95, gaps
    assert min(gaps) >= CRAWL_DELAY_S * 0.5, gaps


def test_user_agent_names_linklens(crawled: CrawledWeb) -> None:
    """What the servers received, on every request: robots.txt, pages and the archive alike."""
    agents = {r.user_agent for r in crawled.web.request_log()}
    assert agents == {crawled.settings.user_agent}
    assert crawled.settings.user_agent.startswith("linklens/") and "+https://" in crawled.settings.user_agent


def test_links_report_formats(crawled: CrawledWeb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LINKLENS_DATA_DIR", str(crawled.settings.data_dir))
    as_json = runner.invoke(app, ["links", "--state", "dead", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert rows and all(r["state"] == "dead" for r in rows)
    markdown = runner.invoke(app, ["links", "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    archived = next(u for u, s in crawled.web.expected_states().items() if s == "archived")
    line = next(ln for ln in markdown.stdout.splitlines() if normalise_url(archived) in ln)
    assert "replace with the archived copy: " + crawled.web.archive_url in line
    table = runner.invoke(app, ["links"])
    assert table.exit_code == 0 and "blocked" in table.stdout


def test_a_link_listed_twice_keeps_both_sections(crawled: CrawledWeb) -> None:
    links = load_list(str(crawled.list_file), crawled.settings).links
    twice = [link for link in links if len(link.placements) > 1]
    assert twice and ("Editor's Picks",) in {p.section for p in twice[0].placements}
    with Store.open(crawled.settings.store_path) as store:
        article = next(a for a in store.articles() if a.url == twice[0].url)
    assert len(article.sections) == 2
    assert article.state in (LinkState.OK, LinkState.REDIRECTED)


# -- tests that crawl their own fixture web -------------------------------------------------


def test_second_crawl_fetches_nothing(web: FixtureWeb, crawl_settings: Settings, list_file: Path) -> None:
    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["crawled"] == len(web.expected_states()) == summary["total_links"]
    assert summary["fetched_anything"] is True
    before = web.total_hits()
    second = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["crawled"] == 0
    assert web.total_hits() == before

    refresh = runner.invoke(app, ["crawl", str(list_file), "--refresh", "--json"])
    assert refresh.exit_code == 0, refresh.output
    with Store.open(crawl_settings.store_path) as store:
        rows = {str(r["url"]): r for r in store.link_rows()}
        post = next(u for u, r in rows.items() if "/posts/" in u and r["state"] == "ok")
        not_modified = [r for r in web.request_log() if r.url == post and r.status == 304]
        assert not_modified, "refresh should send If-None-Match / If-Modified-Since and get a 304"
        assert "not modified" in str(rows[post]["reason"])
        assert store.document(int(rows[post]["id"])) is not None  # type: ignore[arg-type]


def test_crawler_reports_progress_for_every_link(web: FixtureWeb, crawl_settings: Settings, list_file: Path) -> None:
    with Store.open(crawl_settings.store_path) as store:
        store.add_links(load_list(str(list_file), crawl_settings).links)
        seen: list[int] = []
        summary = Crawler(crawl_settings, store).run(progress=lambda p: seen.append(p.done))
    assert seen == list(range(1, len(web.expected_states()) + 1))
    assert summary.this_run == summary.counts


def test_reextract_rebuilds_documents_without_a_request(web: FixtureWeb, crawl_settings: Settings,
                                                         list_file: Path) -> None:
    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    with Store.open(crawl_settings.store_path) as store:
        before = {a.url: a.document for a in store.articles()}
        victim = next(a for a in store.articles() if a.document and "/posts/" in a.url)
        store.replace_document(victim.link_id, Document(title="stale", text="stale", kind="thin", thin=True))
    hits = web.total_hits()
    again = runner.invoke(app, ["crawl", "--reextract", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["reextracted"] == sum(1 for d in before.values() if d is not None)
    assert web.total_hits() == hits
    with Store.open(crawl_settings.store_path) as store:
        after = {a.url: a.document for a in store.articles()}
    assert after[victim.url] == before[victim.url]
