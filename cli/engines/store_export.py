"""The page store → the `articles/` Parquet dataset the Ray index reads.

Why an export: the crawl keeps its state in the SQLite page store (one writer, resumable),
while Ray workers on other machines can only read files. `export_articles` streams the
store's articles, in list order, into Parquet part files through `article_tables`, so the
crawl half (`crawl --engine ray`) and `index --engine ray` write the same thing.

Atomic: the parts are written into a new version of `articles/` and published by switching its
`CURRENT` pointer only when complete (`storage.Datasets`), so a reader never sees half an export
and an export killed midway leaves the previous `articles/` as it was. No lock is taken here:
the commands that call it hold the crawl's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cli.engines.datasets import ARTICLES, article_tables
from cli.engines.storage import Datasets
from ingest.errors import SourceError
from ingest.settings import Settings
from ingest.store import Store

logger = logging.getLogger(__name__)

# Articles per Parquet part file: a unit of work for one Ray read task (a few MB of text).
ARTICLES_PER_PART = 1024
PART_NAME = "part-{:06d}.parquet"


@dataclass(frozen=True)
class ExportReport:
    articles: int
    parts: int
    uri: str


def export_articles(settings: Settings, datasets: Datasets | None = None) -> ExportReport:
    """Write every article of the page store as a new version of `articles/` and publish it, streamed."""
    if not settings.store_path.exists():
        raise SourceError(f"nothing crawled yet in {settings.data_dir} — run: linklens crawl LIST first")
    datasets = datasets or Datasets.open(settings)
    version = datasets.new_version()
    folder = datasets.path(ARTICLES, version)
    datasets.create_dir(folder)
    articles = parts = 0
    with Store.open(settings.store_path) as store:
        for parts, table in enumerate(article_tables(store.articles(), ARTICLES_PER_PART), start=1):
            datasets.write_table(f"{folder}/{PART_NAME.format(parts - 1)}", table)
            articles += table.num_rows
    if not articles:
        raise SourceError(f"the page store {settings.store_path} holds no links yet — run: linklens crawl LIST")
    datasets.publish(ARTICLES, version)
    logger.info("exported %d articles in %d parts to %s/%s", articles, parts, datasets.uri(ARTICLES), version)
    return ExportReport(articles, parts, datasets.uri(ARTICLES))
