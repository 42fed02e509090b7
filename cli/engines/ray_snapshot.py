"""The Ray index's second phase: `articles/` and `passages/` (Parquet) → `IndexBatch`es in list order, streamed.

`index.build.build_snapshot` wants batches of articles in list order with their passages
and vectors; Parquet files written by Ray tasks keep no order, so both datasets are put in
order by their `position` column (the article's place in the list) before they are merged.
The driver holds one batch of articles and their passages at a time, never the corpus.

Passing through every indexed vector in order, this phase also writes the embedding cache's
replacement (`CacheRewriter`): exactly the vectors of the indexed passages, in a few large
files instead of one small file per embedding batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from cli.engines.datasets import ARTICLES, PASSAGES, article_from_row
from cli.engines.ray_index_progress import ProgressBars
from cli.engines.ray_reads import parquet_dataset
from cli.engines.ray_stages import PASSAGE_KEY, embedding_table, passage_from_row, vector_type, vectors_of
from cli.engines.storage import Datasets
from index.build import EmbedCounts, IndexBatch

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

# Articles per batch handed to the snapshot writer (as the local engine's ARTICLES_PER_BATCH).
ARTICLES_PER_SNAPSHOT_BATCH = 256
# Rows per Ray block (and sort range) when a dataset is read back to be sorted by Ray.
ROWS_PER_SORT_BLOCK = 20_000
# Datasets up to this many rows are sorted on the driver, in memory: ~150 MB of passages (a row with its
# vector ~3 KB) or of articles (a row with its text ~30 KB).
DRIVER_SORT_ROWS = {PASSAGES: 50_000, ARTICLES: 5_000}
PASSAGE_ROWS_PER_READ = 4096
CACHE_ROWS_PER_FILE = 200_000


def read_blocks(rows: int, per_block: int) -> int:
    """How many blocks Ray should read a dataset of `rows` rows into."""
    return max(1, -(-rows // per_block))


def sorted_tables(ray: Any, datasets: Datasets, name: str, files: list[str], rows: int, key: list[str],
                  batch_rows: int) -> Iterator[pa.Table]:  # fmt: skip
    """The Parquet `files` of dataset `name` (`rows` rows) sorted by `key`, as tables of up to `batch_rows` rows.

    Up to `DRIVER_SORT_ROWS[name]` rows are sorted here, in Arrow: a Ray sort of a small dataset costs
    seconds of task and worker start-up (5-6 s for 900 passages on 2 CPUs, most of a small build's
    snapshot phase). Larger datasets are sorted by Ray, in ranges of `ROWS_PER_SORT_BLOCK` rows:
    Ray Data makes as many ranges as it expects input blocks, and it expects none from a Parquet
    read, so it would fall back on `default_hash_shuffle_parallelism` (200) whatever the size.
    """
    if rows <= DRIVER_SORT_ROWS[name]:
        table = datasets.dataset(files).to_table()
        for batch in table.sort_by([(column, "ascending") for column in key]).to_batches(max_chunksize=batch_rows):
            yield pa_table(batch)
        return
    blocks = read_blocks(rows, ROWS_PER_SORT_BLOCK)
    dataset = parquet_dataset(ray, datasets, files, blocks)
    dataset.context.default_hash_shuffle_parallelism = blocks  # this dataset's own copy of the context
    yield from dataset.sort(key).iter_batches(batch_size=batch_rows, batch_format="pyarrow")


def pa_table(batch: pa.RecordBatch) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def index_batches(
    ray: Any, datasets: Datasets, counts: EmbedCounts, bars: ProgressBars, cache: CacheRewriter
) -> Iterator[IndexBatch]:
    """Articles with their passages and vectors, in list order, `ARTICLES_PER_SNAPSHOT_BATCH` articles at a time.

    A passage that met two equal rows of the embedding cache in the join arrives twice in a
    row (same position and ordinal) and is kept once.
    """
    files = datasets.files(PASSAGES)
    rows = _passage_rows(sorted_tables(ray, datasets, PASSAGES, files, datasets.rows_in(files), list(PASSAGE_KEY),
                                       PASSAGE_ROWS_PER_READ))
    pending: dict[str, Any] | None = next(rows, None)
    last_key: tuple[int, int] | None = None
    for table in articles_in_order(ray, datasets):
        articles = [article_from_row(r) for r in table.to_pylist()]
        until = int(table.column("position")[-1].as_py())
        passages_of_batch, vectors = [], []
        while pending is not None and pending["position"] <= until:
            key = (pending["position"], pending["ordinal"])
            if key != last_key:
                passages_of_batch.append(passage_from_row(pending))
                vectors.append(pending["vector"])
                counts.embedded += int(pending["embedded"])
                counts.cached += int(not pending["embedded"])
                last_key = key
            pending = next(rows, None)
        matrix = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        cache.add([p.id for p in passages_of_batch], matrix)
        bars.snapshot(len(articles))
        yield IndexBatch(articles, passages_of_batch, matrix)


def articles_in_order(ray: Any, datasets: Datasets) -> Iterator[pa.Table]:
    """`articles/` in position order: read straight from its files when they are in order (an export's are), else
    sorted (`sorted_tables`)."""
    files = datasets.files(ARTICLES)
    dataset = datasets.dataset(files)
    fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    positions = [f.to_table(columns=["position"]).column("position").to_numpy() for f in fragments]
    joined = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if bool(np.all(np.diff(joined) > 0)):
        for fragment in fragments:
            for batch in fragment.to_batches(batch_size=ARTICLES_PER_SNAPSHOT_BATCH):
                if batch.num_rows:
                    yield pa_table(batch)
        return
    logger.info("articles/ files are not in list order: sorting them")
    yield from sorted_tables(ray, datasets, ARTICLES, files, len(joined), ["position"], ARTICLES_PER_SNAPSHOT_BATCH)


def _passage_rows(tables: Iterator[pa.Table]) -> Iterator[dict[str, Any]]:
    """Rows of the sorted passages, each with its vector as a float32 array."""
    for table in tables:
        matrix = vectors_of(table.column("vector"))
        for i, row in enumerate(table.drop_columns(["vector"]).to_pylist()):
            row["vector"] = matrix[i]
            yield row


class CacheRewriter:
    """Writes the embedding cache's replacement as a new version of it; `publish()` switches to it, `abort()` drops it.

    Written only from a build that got through every batch, and published after the snapshot
    is: until then the old version and every part added during this run stay the cache. Once the
    new version is published the loose parts (each embedding batch's) are removed: their vectors
    are in it, or belong to passages no longer indexed (the local cache's `keep_only`).
    """

    def __init__(self, datasets: Datasets, name: str) -> None:
        self.datasets = datasets
        self.name = name
        self.version = datasets.new_version()
        self.work = datasets.path(name, self.version)
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self._files = 0

    def add(self, ids: list[str], matrix: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not ids:
            return
        dimension = int(matrix.shape[1])
        table = embedding_table(ids, matrix)
        if self._writer is None or self._rows_in_file >= CACHE_ROWS_PER_FILE:
            self._close_file()
            self.datasets.create_dir(self.work)
            schema = pa.schema([("id", pa.string()), ("vector", vector_type(dimension))])
            path = f"{self.work}/part-{self._files:06d}.parquet"
            self._writer = pq.ParquetWriter(path, schema, filesystem=self.datasets.fs)
            self._files += 1
            self._rows_in_file = 0
        self._writer.write_table(table)
        self._rows_in_file += table.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def publish(self) -> None:
        self._close_file()
        if not self._files:
            return
        loose = self.datasets.loose_files(self.name)
        self.datasets.publish(self.name, self.version)
        self.datasets.delete_files(loose)

    def abort(self) -> None:
        self._close_file()
        if self._files:
            self.datasets.fs.delete_dir(self.work)
