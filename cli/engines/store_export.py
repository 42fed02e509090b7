"""The page store → the `articles/` Parquet dataset the Ray index reads; and the datasets' filesystem.

Why an export: the crawl keeps its state in the SQLite page store (one writer, resumable),
while Ray workers on other machines can only read files. `export_articles` streams the
store's articles, in list order, into Parquet part files through `article_tables`, so the
crawl half (`crawl --engine ray`) and `index --engine ray` write the same thing.

Atomic: the parts are written into a hidden temporary folder beside `articles/` and moved
into place only when complete, so a reader never sees half an export and an export killed
midway leaves the previous `articles/` as it was.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cli.engines.datasets import ARTICLES, article_tables, dataset_uri
from ingest.errors import SourceError, StoreError
from ingest.settings import Settings
from ingest.store import Store

if TYPE_CHECKING:
    import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

# Articles per Parquet part file: a unit of work for one Ray read task (a few MB of text).
ARTICLES_PER_PART = 1024
PART_NAME = "part-{:06d}.parquet"


@dataclass(frozen=True)
class ExportReport:
    articles: int
    parts: int
    uri: str


def dataset_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a datasets location (a local folder or a URI such as s3://…) and its root path."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if "://" not in location:
        from pathlib import Path

        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(
            f"cannot use the datasets location {location!r} ({exc}) — set LINKLENS_DATASETS_URI to a folder "
            "or a pyarrow filesystem URI such as s3://bucket/prefix"
        ) from None


def dataset_exists(location: str, name: str) -> bool:
    """Whether `location`/`name` holds at least one Parquet part."""
    import pyarrow.fs as pafs

    fs, root = dataset_filesystem(location)
    selector = pafs.FileSelector(dataset_uri(root, name), allow_not_found=True)
    return any(info.path.endswith(".parquet") for info in fs.get_file_info(selector))


def dataset_rows(location: str, name: str) -> int:
    """Rows of the dataset `location`/`name`, from its Parquet footers (no data read)."""
    import pyarrow.dataset as pads

    fs, root = dataset_filesystem(location)
    return int(pads.dataset(dataset_uri(root, name), filesystem=fs, format="parquet").count_rows())


def replace_folder(fs: pafs.FileSystem, finished: str, target: str) -> None:
    """Move the finished folder `finished` to `target`, replacing what was there."""
    import pyarrow.fs as pafs

    old = f"{target}.old-{uuid.uuid4().hex[:8]}"
    if fs.get_file_info(target).type != pafs.FileType.NotFound:
        fs.move(target, old)
    fs.move(finished, target)
    remove_folder(fs, old)


def remove_folder(fs: pafs.FileSystem, folder: str) -> None:
    import pyarrow.fs as pafs

    if fs.get_file_info(folder).type != pafs.FileType.NotFound:
        fs.delete_dir(folder)


def export_articles(settings: Settings) -> ExportReport:
    """Write every article of the page store to `articles/` under `settings.datasets_location`, streamed, atomically."""
    import pyarrow.parquet as pq

    if not settings.store_path.exists():
        raise SourceError(f"nothing crawled yet in {settings.data_dir} — run: linklens crawl LIST first")
    fs, root = dataset_filesystem(settings.datasets_location)
    target = dataset_uri(root, ARTICLES)
    work = dataset_uri(root, f".{ARTICLES}.tmp-{uuid.uuid4().hex[:8]}")
    fs.create_dir(work, recursive=True)
    articles = parts = 0
    try:
        with Store.open(settings.store_path) as store:
            for parts, table in enumerate(article_tables(store.articles(), ARTICLES_PER_PART), start=1):
                pq.write_table(table, f"{work}/{PART_NAME.format(parts - 1)}", filesystem=fs)
                articles += table.num_rows
        if not articles:
            raise SourceError(f"the page store {settings.store_path} holds no links yet — run: linklens crawl LIST")
        replace_folder(fs, work, target)
    except BaseException:
        remove_folder(fs, work)
        raise
    logger.info("exported %d articles in %d parts to %s", articles, parts, target)
    return ExportReport(articles, parts, dataset_uri(settings.datasets_location, ARTICLES))
