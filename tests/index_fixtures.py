"""Index fixtures: the fixture articles in a real store, built once per session with the real model.

Import the fixtures you use into a test module (`from tests.index_fixtures import built, searcher`).
Building is the slow part (model load + embedding), so it happens once; tests that
need their own data folder copy the session's embedding cache and ONNX export
(`seeded_settings`), so their builds embed only what they change.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from index.build import BuildReport, build_index
from index.embedder import Embedder
from index.model_ref import configured_model
from index.search import Searcher
from ingest.models import CrawlOutcome, Document, LinkState, ListedLink, ListPlacement
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.fixtures.relevance import fixture_articles, slug_urls

ARCHIVED_SLUG = "bloom-filters"
ARCHIVE_PREFIX = "https://web.archive.org/web/2021/"
SECOND_PLACEMENT = ("consistent-hashing", ListPlacement(("Performance", "Caching"), "Consistent hashing for caches", 0))
# Links with no text: found only through their title cards.
DEAD_URL = "https://maps.example.com/geohash-nearby-drivers"
DEAD_TITLE = "Geohashes and Quadtrees for Nearby-Driver Search"
PENDING_URL = "https://video.example.net/transcoding-pipeline"
# A list title full of markup: the page must show it as text, never run it.
PENDING_TITLE = "Designing a Video Transcoding Pipeline <script>window.pwned = true; alert('pwned')</script>"
# The session index is a collection of two lists: the whole fixture list, and a second list that
# cites a few of its articles (same sections), so results carry both names and filter by either.
MAIN_LIST = "awesome-fixture"
PICKS_LIST = "fixture-picks"
PICKS_SLUGS = ("consistent-hashing", "hot-shards-key-salting", "bloom-filters")


@dataclass
class BuiltIndex:
    settings: Settings
    report: BuildReport
    embedder: Embedder


def listed_links() -> list[ListedLink]:
    """Every fixture article as a list link, plus one dead and one never-crawled link."""
    urls = slug_urls()
    links = []
    for i, a in enumerate(fixture_articles()):
        path = (a["section"], a["subsection"]) if a["subsection"] else (a["section"],)
        placements = [ListPlacement(path, a["title"], i * 10)]
        if a["slug"] == SECOND_PLACEMENT[0]:
            extra = SECOND_PLACEMENT[1]
            placements.append(ListPlacement(extra.section, extra.title, i * 10 + 5))
        links.append(ListedLink(urls[a["slug"]], placements))
    end = len(links) * 10
    links.append(ListedLink(DEAD_URL, [ListPlacement(("Architectures",), DEAD_TITLE, end)]))
    links.append(ListedLink(PENDING_URL, [ListPlacement(("Architectures", "Media"), PENDING_TITLE, end + 10)]))
    return links


def document_for(article: dict, host: str) -> Document:
    return Document(
        title=f"{article['title']} | {host}",
        text="\n\n".join(article["paragraphs"]),
        kind="html",
        author=article["author"],
        date=article["date"],
        sitename=host,
        language="en",
    )


def fill_store(store: Store, with_documents: bool = True) -> dict[str, int]:
    """Add the fixture lists and (unless told not to) their crawl outcomes; returns url -> link id."""
    links = listed_links()
    picked = {slug_urls()[slug] for slug in PICKS_SLUGS}
    store.sync_collection([(f"/lists/{MAIN_LIST}.md", MAIN_LIST, links),
                           (f"/lists/{PICKS_LIST}.md", PICKS_LIST, [link for link in links if link.url in picked])])
    ids = {row["url"]: int(row["id"]) for row in store.link_rows()}
    if not with_documents:
        return ids
    urls = slug_urls()
    for article in fixture_articles():
        url = urls[article["slug"]]
        host = url.split("/")[2]
        archived = article["slug"] == ARCHIVED_SLUG
        outcome = CrawlOutcome(
            state=LinkState.ARCHIVED if archived else LinkState.OK,
            reason="from the web archive" if archived else "fetched",
            final_url=url,
            http_status=200,
            document=document_for(article, host),
            archived_url=ARCHIVE_PREFIX + url if archived else None,
        )
        store.record_outcome(ids[url], outcome)
    store.record_outcome(ids[DEAD_URL], CrawlOutcome(state=LinkState.DEAD, reason="http 404", http_status=404))
    return ids


def seed_caches(source: Settings, target: Settings) -> None:
    """Give `target` the embeddings and ONNX export `source` computed (export files hard-linked)."""
    target.cache_dir.mkdir(parents=True, exist_ok=True)
    for item in source.cache_dir.iterdir():
        if item.is_dir():
            shutil.copytree(item, target.cache_dir / item.name, copy_function=os.link, dirs_exist_ok=True)
        elif item.name.endswith(".sqlite3"):
            shutil.copy2(item, target.cache_dir / item.name)


# Fixtures imported into several test modules are separate fixture definitions to
# pytest, each with its own session cache; this memo makes them share one build.
# (Registering this module with `pytest_plugins` in the root conftest would too.)
_session: dict[str, object] = {}


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltIndex:
    """The fixture corpus, crawled into a store and built into an index, once per test session."""
    if "built" not in _session:
        settings = load_settings(data_dir=tmp_path_factory.mktemp("index-session"))
        embedder = Embedder(configured_model(settings))
        with Store.open(settings.store_path) as store:
            fill_store(store)
            report = build_index(settings, store, embedder=embedder)
        _session["built"] = BuiltIndex(settings, report, embedder)
    return _session["built"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def searcher(built: BuiltIndex) -> Searcher:
    """One searcher over the session index, shared read-only by every test."""
    if "searcher" not in _session:
        _session["searcher"] = Searcher.open(built.settings)
    return _session["searcher"]  # type: ignore[return-value]


@pytest.fixture
def seeded_settings(built: BuiltIndex, tmp_path: Path) -> Settings:
    """Settings for a fresh data folder whose caches already hold the session's work."""
    settings = load_settings(data_dir=tmp_path / "seeded", keep_snapshots=2)
    seed_caches(built.settings, settings)
    return settings
