"""The Ray index's stages as Ray Data runs them: cutting passages (tasks) and embedding them (an actor pool).

Each stage calls the code the local engine calls — `index.passages.article_passages` to cut,
`index.embedder.Embedder.encode` to embed — so the two engines cannot drift apart; this module
only converts between Arrow batches and those functions' objects.

`passages/` columns (`passage_schema`): the article's `position` (list order) and the passage's
`ordinal` order the index; `link_id`, `kind`, `context`, `text` rebuild the `Passage`; `id` is
its content hash (the embedding cache key); `vector` is its embedding; `embedded` says whether
this run computed it (False: it came from the embedding cache).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from cli.engines.datasets import article_from_row
from index.passages import Passage, article_passages

if TYPE_CHECKING:
    import pyarrow as pa

    from cli.engines.storage import Datasets

logger = logging.getLogger(__name__)

PASSAGE_KEY = ("position", "ordinal")


def passage_schema() -> pa.Schema:
    """Columns of a passage before it is embedded (the embedding stage adds `vector` and `embedded`)."""
    import pyarrow as pa

    return pa.schema([
        ("position", pa.int64()), ("ordinal", pa.int32()), ("link_id", pa.int64()), ("kind", pa.string()),
        ("context", pa.string()), ("text", pa.string()), ("id", pa.string()),
    ])  # fmt: skip


def vector_type(dimension: int) -> pa.DataType:
    import pyarrow as pa

    return pa.list_(pa.float32(), dimension)


def vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A float32 matrix as a fixed-size-list column of its rows (the `vector` column of every dataset)."""
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), int(matrix.shape[1]))


def embedding_table(ids: list[str], matrix: np.ndarray) -> pa.Table:
    """Rows of the embedding cache: passage id and vector."""
    import pyarrow as pa

    return pa.table({"id": pa.array(ids, pa.string()), "vector": vector_column(matrix)})


def passages_with_vectors(batch: pa.Table, matrix: np.ndarray, embedded: np.ndarray) -> pa.Table:
    """Rows of `passages/`: `batch` (its cache-join `vector` column dropped) with each row's vector and whether
    this run embedded it."""
    import pyarrow as pa

    passages = batch.drop_columns([name for name in ("vector",) if name in batch.column_names])
    return passages.append_column("vector", vector_column(matrix)).append_column("embedded", pa.array(embedded))


def passage_from_row(row: dict[str, Any]) -> Passage:
    return Passage(int(row["link_id"]), int(row["ordinal"]), row["kind"], row["context"], row["text"])


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column of vectors as one float32 matrix (no Python objects per value)."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dimension = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dimension)


def threads_on_this_node(share: int) -> int:
    """Model threads for an embedding actor whose share of the cluster's CPUs is `share`, capped at the CPUs that
    Ray gives the node running it and at that machine's cores (called on that node: a cluster's nodes differ,
    and one node of a 2-CPU cluster may offer 1 CPU on a machine of 64 cores)."""
    import ray

    from index.embedder import core_count

    node_id = ray.get_runtime_context().get_node_id()
    node_cpus = next((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["NodeID"] == node_id), 0)
    return max(1, min(share, int(node_cpus) or 1, core_count()))


def cut_passages(
    articles: pa.Table, words: int, overlap: int, headings: bool, progress: Any = None
) -> pa.Table:
    """A batch of `articles/` rows → their passages, as the local build cuts them (Ray Data task)."""
    import pyarrow as pa

    rows = []
    for row in articles.to_pylist():
        for p in article_passages(article_from_row(row), words, overlap, headings):
            rows.append({"position": row["position"], "ordinal": p.ordinal, "link_id": p.link_id, "kind": p.kind,
                         "context": p.context, "text": p.text, "id": p.id})  # fmt: skip
    if progress is not None:
        progress.add.remote("articles", articles.num_rows)
        progress.add.remote("passages", len(rows))
    return pa.Table.from_pylist(rows, schema=passage_schema())


class PassageEmbedder:
    """One embedding actor: loads the model once in `__init__`, then embeds the passages of each batch it is given.

    Reports passages embedded or found cached, and the milliseconds spent in the model
    (`encode_ms`, for the benchmark's per-core rate), to the progress counter.
    A batch's rows with a `vector` already (joined from the embedding cache) pass through; the
    others are embedded (with the model's passage prefix in front, as `index.build` does) and
    their vectors written at once as a new part file of the embedding cache. Written per
    batch, so a run killed midway keeps everything embedded before the kill.
    """

    def __init__(
        self, model_id: str, location: str, passage_prefix: str, datasets: Datasets, cache_name: str, threads: int,
        device: str, progress: Any = None,
    ) -> None:  # fmt: skip
        started = time.perf_counter()
        import torch

        from index.embedder import Embedder
        from index.model_ref import ModelRef

        self.embedder = Embedder(ModelRef(model_id, location), device=device)
        self.dimension = self.embedder.dimension  # loads the model, once per actor
        # `threads` is the actor's share of the cluster's CPUs; the node's are counted here, where it runs.
        self.threads = threads_on_this_node(threads)
        torch.set_num_threads(self.threads)
        self.passage_prefix = passage_prefix
        self.datasets = datasets
        self.cache_dir = datasets.path(cache_name)
        datasets.create_dir(self.cache_dir)
        self.progress = progress
        self.has_embedded = False
        if progress is not None:
            progress.add.remote("actor_start_ms", round((time.perf_counter() - started) * 1000))
            progress.add.remote("actor_threads", self.threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        n = batch.num_rows
        matrix = np.zeros((n, self.dimension), dtype=np.float32)
        embedded = np.ones(n, dtype=bool)
        if "vector" in batch.column_names:
            column = batch.column("vector").combine_chunks()
            have = column.is_valid().to_numpy(zero_copy_only=False)
            if have.any():
                matrix[have] = vectors_of(column.filter(pa.array(have)))
            embedded = ~have
        missing = np.flatnonzero(embedded)
        if len(missing):
            rows = batch.take(pa.array(missing)).to_pylist()
            texts = {r["id"]: self.passage_prefix + passage_from_row(r).indexed_text for r in rows}
            started = time.perf_counter()
            fresh = dict(zip(texts, self.embedder.encode(list(texts.values())), strict=True))
            encode_ms = round((time.perf_counter() - started) * 1000)
            matrix[missing] = np.stack([fresh[r["id"]] for r in rows])
            self._write_cache(list(fresh), np.stack(list(fresh.values())))
        if self.progress is not None:
            if len(missing):
                self.progress.add.remote("encode_ms", encode_ms)
                self.progress.add.remote("encode_core_ms", encode_ms * self.threads)
                if not self.has_embedded:  # how many actors shared the work (an idle actor is a wasted CPU)
                    self.progress.add.remote("actors_embedding", 1)
                    self.has_embedded = True
            self.progress.add.remote("embedded", len(missing))
            self.progress.add.remote("cached", n - len(missing))
        return passages_with_vectors(batch, matrix, embedded)

    def _write_cache(self, ids: list[str], matrix: np.ndarray) -> None:
        """One new loose part of the embedding cache, seen whole or not at all."""
        self.datasets.write_table(f"{self.cache_dir}/part-{uuid.uuid4().hex}.parquet", embedding_table(ids, matrix))
