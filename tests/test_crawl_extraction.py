"""The crawl end to end over the extraction cases of the hostile web (tests/extraction_web.py).

Real servers on loopback, the real crawler and store, the real extraction pool; the only test
double is the pool's job, which hangs, crashes or allocates on marked pages and runs the real
extractor on every other page. Each case ends in its state with its reason in words, the good
neighbours are extracted, no binary body is stored or indexed, and text decodes as written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from index.passages import BODY_KIND, article_passages
from ingest.crawler import Crawler
from ingest.extraction_pool import ExtractionPool
from ingest.models import Article, CrawlOutcome, Document, FetchedBody, LinkState
from ingest.settings import Settings, load_settings
from ingest.sources import load_list
from ingest.store import Store
from ingest.urls import normalise_url
from tests.conftest import FAST_CRAWL_ENV
from tests.extraction_jobs import misbehaving_job
from tests.extraction_web import (
    CHARSET_PARAGRAPH,
    CREME,
    MARKDOWN_PARAGRAPH,
    TEST_MEMORY_MB,
    TEST_TIMEOUT_S,
    ExtractionWeb,
    png_bytes,
)
from tests.fixtureweb import load_fixture_articles

ARTICLES = 5
runner = CliRunner()


@dataclass
class HostileCrawl:
    web: ExtractionWeb
    settings: Settings
    list_file: Path
    report: dict[str, dict[str, object]]
    articles: dict[str, Article]
    stored_bodies: set[str]

    def case(self, name: str) -> dict[str, object]:
        return self.report[normalise_url(self.web.case_urls()[name])]

    def article(self, name: str) -> Article:
        return self.articles[normalise_url(self.web.case_urls()[name])]


def crawl_env(web: ExtractionWeb, data_dir: Path) -> dict[str, str]:
    return dict(FAST_CRAWL_ENV, LINKLENS_ARCHIVE_URL=web.archive_url, LINKLENS_DATA_DIR=str(data_dir),
                LINKLENS_EXTRACT_TIMEOUT_S=str(TEST_TIMEOUT_S), LINKLENS_EXTRACT_MEMORY_MB=str(TEST_MEMORY_MB))


def crawl_with_misbehaving_job(web: ExtractionWeb, root: Path) -> HostileCrawl:
    """Crawl the whole web with the test job; the caller has set the environment."""
    settings = load_settings()
    list_file = web.write_list_markdown(root / "hostile-list.md")
    with Store.open(settings.store_path) as store, \
            ExtractionPool(2, TEST_TIMEOUT_S, TEST_MEMORY_MB, job=misbehaving_job) as pool:
        store.add_links(load_list(str(list_file), settings).links)
        Crawler(settings, store, executor=pool).run()
        report = {str(r["url"]): r for r in store.link_rows()}
        articles = {a.url: a for a in store.articles()}
        stored = {a.url for a in articles.values() if store.body(a.link_id) is not None}
    return HostileCrawl(web, settings, list_file, report, articles, stored)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileCrawl]:
    root = tmp_path_factory.mktemp("hostile-extraction")
    with ExtractionWeb(load_fixture_articles()[:ARTICLES], n_hosts=3) as web, pytest.MonkeyPatch.context() as mp:
        for key, value in crawl_env(web, root / "data").items():
            mp.setenv(key, value)
        yield crawl_with_misbehaving_job(web, root)


def test_every_case_ends_in_its_state_with_its_reason_in_words(hostile: HostileCrawl) -> None:
    expected_states = {normalise_url(u): s for u, s in hostile.web.expected_states().items()}
    states = {url: row["state"] for url, row in hostile.report.items()}
    assert states == expected_states
    reasons = {normalise_url(u): r for u, r in hostile.web.expected_reasons().items()}
    assert {url: hostile.report[url]["reason"] for url in reasons} == reasons


def test_the_crawl_ends_with_nothing_pending(hostile: HostileCrawl) -> None:
    """It ended (the hangs were cut by the extraction time limit: their reasons say so, see above)."""
    assert not [r for r in hostile.report.values() if r["state"] == "pending"]


def test_good_neighbours_are_extracted(hostile: HostileCrawl) -> None:
    posts = [a for a in hostile.articles.values() if "/posts/" in a.url]
    assert len(posts) == ARTICLES
    for article in posts:
        assert article.state == LinkState.OK and article.document is not None, article.url
        assert not article.document.thin and len(article.document.text.split()) > 100, article.url


def test_bodies_that_are_not_text_are_neither_stored_nor_indexed(hostile: HostileCrawl) -> None:
    for name in ("zip", "octet-binary", "png-as-html", "empty", "archived-png"):
        article = hostile.article(name)
        assert article.state == LinkState.UNSUPPORTED, name
        assert article.url not in hostile.stored_bodies, name
        assert article.document is not None and article.document.text == "", name
        passages = article_passages(article)
        # only the title card, which carries the list's title: the link stays findable
        assert [p.kind for p in passages if p.kind == BODY_KIND] == [], name
        assert article.list_title in passages[0].context, name


def test_plain_text_pdf_and_mislabelled_html_are_extracted(hostile: HostileCrawl) -> None:
    markdown = hostile.article("markdown").document
    assert markdown is not None and markdown.kind == "text"
    assert " ".join(MARKDOWN_PARAGRAPH.split()[:10]) in " ".join(markdown.text.split())
    pdf = hostile.article("pdf-as-octet").document
    pdf_article = hostile.web.articles[-1]
    assert pdf is not None and pdf.kind == "pdf"
    assert " ".join(pdf_article.paragraphs[0].split()[:6]) in " ".join(pdf.text.split())
    html = hostile.article("html-as-text").document
    assert html is not None and html.kind == "html" and "<p>" not in html.text and CREME in html.text


@pytest.mark.parametrize("name", ["utf8-under-latin1", "bom-under-cp1252"])
def test_text_lying_about_its_charset_reads_as_written(hostile: HostileCrawl, name: str) -> None:
    document = hostile.article(name).document
    assert document is not None
    assert CREME in document.text and "Ã" not in document.text and "\ufeff" not in document.text
    assert " ".join(CHARSET_PARAGRAPH.split()[-8:]) in document.text


def test_pages_that_broke_the_extractor_keep_their_body_for_a_later_reextract(hostile: HostileCrawl) -> None:
    for name in ("hang", "crash", "hog", "raise", "attribute-bomb"):
        article = hostile.article(name)
        assert article.state == LinkState.FAILED and article.document is None, name
        assert article.url in hostile.stored_bodies, name


def test_a_rerun_finishes_at_once_and_reextract_goes_through_the_same_isolation(tmp_path: Path) -> None:
    """After a crawl whose extractor crashed, raised and ran out of memory: a plain rerun has nothing
    to do; `--reextract` through the same misbehaving job fails them again, in isolation, with the same
    reasons; `--reextract` with the real extractor recovers them and refuses a binary body an older
    crawl had stored as text. Nothing is fetched after the first crawl."""
    broken = ("crash", "hog", "raise")
    with ExtractionWeb(load_fixture_articles()[:2], n_hosts=2, only=(*broken, "markdown")) as web, \
            pytest.MonkeyPatch.context() as mp:
        for key, value in crawl_env(web, tmp_path / "data").items():
            mp.setenv(key, value)
        first = crawl_with_misbehaving_job(web, tmp_path)
        reasons = {name: first.case(name)["reason"] for name in broken}
        assert all(first.case(name)["state"] == "failed" for name in broken), reasons
        hits = web.total_hits()
        rerun = runner.invoke(app, ["crawl", str(first.list_file), "--json"])
        assert rerun.exit_code == 0, rerun.output
        assert json.loads(rerun.stdout)["crawled"] == 0
        with Store.open(first.settings.store_path) as store, \
                ExtractionPool(2, TEST_TIMEOUT_S, TEST_MEMORY_MB, job=misbehaving_job) as pool:
            # a link an older linklens stored with a PNG body and junk text
            legacy = first.article("markdown")
            store.record_outcome(legacy.link_id, CrawlOutcome(
                LinkState.OK, "HTTP 200", body=FetchedBody(legacy.url, "text/html", png_bytes(), False),
                document=Document(title=None, text="IHDR IDAT IEND junk", kind="text")))
            Crawler(first.settings, store, executor=pool).reextract()
            again = {str(r["url"]): r for r in store.link_rows()}
            assert {name: again[normalise_url(web.case_urls()[name])]["reason"] for name in broken} == reasons
        real = runner.invoke(app, ["crawl", "--reextract", "--json"])
        assert real.exit_code == 0, real.output
        assert web.total_hits() == hits
        with Store.open(first.settings.store_path) as store:
            rows = {str(r["url"]): r for r in store.link_rows()}
            docs = {a.url: a.document for a in store.articles()}

    for name in broken:
        row = rows[normalise_url(web.case_urls()[name])]
        assert (row["state"], row["reason"]) == ("ok", "text extracted again from the stored copy"), name
        document = docs[normalise_url(web.case_urls()[name])]
        assert document is not None and "Sentence 29 about queues" in document.text, name
    assert (rows[legacy.url]["state"], rows[legacy.url]["reason"]) == (
        "unsupported", "not text: a PNG image (image/png) labelled text/html")
    assert docs[legacy.url] is not None and docs[legacy.url].text == ""  # type: ignore[union-attr]
