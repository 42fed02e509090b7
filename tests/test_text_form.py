"""Issue 15, text as written: pages in any script and charset, crawled, stored, indexed and searched.

The real crawl path over loopback (tests/extraction_web.py serving tests/charset_pages.py), the real
extraction pool and store, a real index built with the bundled model, BM25 searches. Every page
is stored as written (NFC, no mojibake, no holes) or ends `failed` with the reason; a word typed
in either Unicode form finds the page that holds it in the other.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from index.build import build_index
from index.search import Searcher
from ingest.crawler import Crawler
from ingest.models import Article, LinkState
from ingest.settings import DEFAULT_EXTRACT_TIMEOUT_S, Settings, load_settings
from ingest.sources import load_list
from ingest.store import Store
from ingest.urls import normalise_url
from tests.charset_pages import VIDEO_ARTICLE, VIDEO_DESCRIPTION, CharsetPage, charset_pages
from tests.conftest import PATIENT_DEADLINES_ENV
from tests.extraction_web import ExtractionWeb
from tests.fixtureweb import load_fixture_articles
from tests.index_fixtures import BuiltIndex, seed_caches
from tests.test_crawl_extraction import crawl_env

# The session's loaded model and ONNX export (the bundled model): loaded and exported once per session.
pytest_plugins = ["tests.index_fixtures"]

PAGES = {page.name: page for page in charset_pages()}
# The pages holding the German paragraph (and its "Vögel"), each in another form or charset.
GERMAN_PAGES = ("decomposed", "utf8-stray-bytes-under-latin1", "latin1-german-unlabelled")


@dataclass
class CrawledText:
    web: ExtractionWeb
    settings: Settings
    rows: dict[str, dict[str, object]]
    articles: dict[str, Article]
    searcher: Searcher

    def url(self, name: str) -> str:
        return normalise_url(self.web.case_urls()[name])

    def article(self, name: str) -> Article:
        return self.articles[self.url(name)]

    def found(self, query: str) -> list[str]:
        """The case names of the pages a BM25 search for `query` returns, best first."""
        names = {self.url(name): name for name in PAGES}
        hits = self.searcher.search(query, k=10, mode="bm25").results
        return [names[normalise_url(hit.url)] for hit in hits if normalise_url(hit.url) in names]


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, built: BuiltIndex) -> Iterator[CrawledText]:
    root = tmp_path_factory.mktemp("text-form")
    with ExtractionWeb(load_fixture_articles()[:2], n_hosts=2, only=tuple(PAGES)) as web, \
            pytest.MonkeyPatch.context() as mp:
        for key, value in {**crawl_env(web, root / "data"), **PATIENT_DEADLINES_ENV}.items():
            mp.setenv(key, value)
        mp.setenv("LINKLENS_EXTRACT_WORKERS", "1")
        # No page here misbehaves: the default time limits (fetch deadlines above, extraction here), so a
        # loaded machine cannot fail one by the clock.
        mp.setenv("LINKLENS_EXTRACT_TIMEOUT_S", str(DEFAULT_EXTRACT_TIMEOUT_S))
        settings = load_settings()
        seed_caches(built.settings, settings)  # none of these pages is in it: each is embedded here
        list_file = web.write_list_markdown(root / "list.md")
        with Store.open(settings.store_path) as store:
            store.add_links(load_list(str(list_file), settings).links)
            Crawler(settings, store).run()
            rows = {str(r["url"]): dict(r) for r in store.link_rows()}
            articles = {a.url: a for a in store.articles()}
            build_index(settings, store, embedder=built.embedder)
        yield CrawledText(web, settings, rows, articles, Searcher.open(settings))


@pytest.mark.parametrize("page", charset_pages(), ids=lambda page: page.name)
def test_every_page_is_stored_as_written_or_fails_with_the_reason(crawled: CrawledText, page: CharsetPage) -> None:
    row = crawled.rows[crawled.url(page.name)]
    assert (row["state"], row["reason"] if page.reason else "") == (page.state, page.reason)
    document = crawled.article(page.name).document
    if page.state != "ok":
        assert document is None  # nothing of it is indexed as text; the body is kept for a --reextract
        return
    assert document is not None and not document.thin
    stored = f"{document.title}\n{document.text}"
    assert unicodedata.is_normalized("NFC", stored)
    missing = [m for m in page.must if m not in stored]
    present = [m for m in page.must_not if m in stored]
    assert (missing, present) == ([], []), stored[:300]


def test_no_ok_text_holds_a_run_of_replacement_characters(crawled: CrawledText) -> None:
    for article in crawled.articles.values():
        if article.state is LinkState.OK and article.document is not None:
            assert "\ufffd\ufffd" not in article.document.text, article.url


def test_stray_bytes_in_a_utf8_page_are_replaced_and_the_rest_reads_as_written(crawled: CrawledText) -> None:
    document = crawled.article("utf8-stray-bytes-under-latin1").document
    assert document is not None
    assert document.text.count("\ufffd") == 4
    assert "unabhängig\ufffd geprüft" in document.text


def test_a_video_page_with_an_article_keeps_it_and_gains_the_description(crawled: CrawledText) -> None:
    document = crawled.article("video-with-article").document
    assert document is not None
    assert len(document.text.split()) >= len(VIDEO_ARTICLE.split())
    assert document.text.startswith(VIDEO_DESCRIPTION)


def test_a_composed_query_finds_decomposed_text_and_the_reverse(crawled: CrawledText) -> None:
    """"geprüft" typed composed finds the page written decomposed; "Vögel" typed decomposed finds the
    pages written composed (the stray-bytes page, the Latin-1 page) and the decomposed one."""
    composed = "geprüft"
    assert unicodedata.is_normalized("NFC", composed)
    assert "decomposed" in crawled.found(composed)
    decomposed = unicodedata.normalize("NFD", "Vögel")
    assert decomposed != "Vögel"
    found = crawled.found(decomposed)
    assert sorted(found) == sorted(GERMAN_PAGES), found


@pytest.mark.parametrize("name", ["chinese", "bengali", "gb18030-under-utf8"])
def test_pages_in_other_scripts_are_found_by_a_word_of_their_text(crawled: CrawledText, name: str) -> None:
    for query in PAGES[name].queries:
        found = crawled.found(query)
        assert found[:1] == [name], (query, found)


def test_a_chinese_word_is_marked_in_the_snippet_as_one_word(crawled: CrawledText) -> None:
    """"共识" is the pair the query and the page share: it is bold in the snippet, whole, with no word
    boundary to find in the page's unspaced text."""
    hit = crawled.searcher.search("共识", k=1, mode="bm25").results[0]
    assert normalise_url(hit.url) == crawled.url("chinese")
    assert "**共识**" in hit.snippet, hit.snippet


def test_a_word_that_is_not_there_finds_none_of_them(crawled: CrawledText) -> None:
    assert crawled.found("幂等") == ["gb18030-under-utf8"]  # a pair of the queue page's, no other
    assert crawled.found("共识") == ["chinese"]
    assert crawled.found("ক্যাশ") == ["bengali"]


def test_the_reverse_of_a_word_is_not_a_match(crawled: CrawledText) -> None:
    """Character pairs match in order: "量吐吞" is not "吞吐量"."""
    assert crawled.found("量吐吞") == []
