"""Dense retrieval: the passage vectors on disk, an ANN index chosen by size, and filtered search.

Layout in a snapshot: `vectors.npy` holds every passage vector (float32, row i =
passage i) and is the truth: the exact path, re-ranking, filters and "more like
this" read it. Larger snapshots add `ann.faiss`, an approximate index over 8-bit
codes of the same vectors. Both are memory-mapped when loaded, so N server
processes on one box share one copy in the page cache, and loading costs
milliseconds whatever the size.

Kinds (measured on real-like MiniLM vectors, see bench/index.py and the report):
* `flat`: exact inner product over `vectors.npy` — never misses; ~1 ms per 10k passages.
* `hnsw`: FAISS HNSW graph over 8-bit scalar-quantised codes (IndexHNSWSQ), exact
  float32 re-rank of its candidates. Fastest queries; its graph (~260 bytes a
  passage) is read into each process and is slow to build (~1k passages/s on 2 cores).
* `ivf`: FAISS inverted lists of the same 8-bit codes (IndexIVFScalarQuantizer), exact
  re-rank. The memory-lean kind: no graph, every byte memory-mapped and shared,
  and it builds in minutes at a million passages.

Filters: a narrow filter is answered exactly by scoring the allowed rows' vectors
directly (an ANN index restricted to a few rows loses recall); a broad one by the
ANN with over-fetch, then the filter, falling back to the exact path whenever
fewer than `n` allowed rows survive. Re-ranking makes every returned score the
exact cosine, so fusion sees the same numbers whatever the kind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

FLAT = "flat"
HNSW = "hnsw"
IVF = "ivf"
KINDS = (FLAT, HNSW, IVF)
VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.faiss"

HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
# Search breadth: twice the candidates asked for, at least 400. Measured at 100k real-like
# passages (bench/index.py), recall@10 vs exact: ef 200 → 0.94, 256 → 0.96, 400 → 0.97 (p50 0.8 → 1.2 ms).
HNSW_EF_SEARCH_MIN = 400
HNSW_EF_SEARCH_FACTOR = 2
# Inverted lists: about 2·√n lists, each probed list ~n/nlist codes. NPROBE_SHARE of
# the lists are scanned per query. Measured at 100k (632 lists), recall@10 vs exact:
# nprobe 16 → 0.98, 32 → 0.997, 64 → 0.999 (p50 1.2, 1.9, 2.8 ms); at 1M (1999 lists):
# nprobe 15 → 0.983, 20 → 0.990, 30 → 0.993, 60 → 1.0 (CPU p50 1.7, 2.1, 2.6, 4.1 ms).
IVF_LISTS_PER_SQRT = 2
IVF_MIN_LISTS = 64
IVF_NPROBE_SHARE = 0.01
IVF_MIN_NPROBE = 20
# k-means learns from this many vectors per list (FAISS warns below 39), at most TRAIN_MAX.
IVF_TRAIN_PER_LIST = 40
IVF_TRAIN_MAX = 131_072
CODES = "sq8"
FLAT_CODES = "float32"
# The 8-bit codes learn each dimension's range from this many vectors.
SQ_TRAIN = 65_536
# Rows read from vectors.npy per step while building or scanning: bounded memory (~24 MB at d=384).
CHUNK_ROWS = 16_384
# Rows gathered per step by the exact filtered path: 256 × 384 floats = 384 KB, within a core's L2.
GATHER_ROWS = 256
# Filters allowing at most this share of the passages are answered exactly; broader
# ones by the ANN with over-fetch (measured crossover, see bench/index.py "filters").
EXACT_FILTER_MAX_SHARE = 0.1
# Over-fetch for a broad filter: n / share expected survivors, times this margin.
OVERFETCH_MARGIN = 1.5
# One thread per query: measured, OpenMP start-up makes a flat scan of 10k vectors
# about ten times slower than a single thread. Builds use every core. (No OpenMP pool runs in a
# server's parent before it forks its workers either: serve/prefork.py.)
QUERY_THREADS = 1


@dataclass(frozen=True)
class IndexParams:
    """How the dense index of a snapshot was built and is searched; recorded in the manifest."""

    kind: str
    codes: str | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search_min: int | None = None
    nlist: int | None = None
    nprobe: int | None = None
    rerank: str | None = None
    exact_filter_max_share: float = EXACT_FILTER_MAX_SHARE

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def choose_kind(passages: int, index_kind: str, ann_threshold: int, lean_threshold: int) -> str:
    """The kind for a corpus of `passages`: the setting if it names one, else by size."""
    if index_kind in KINDS:
        return index_kind
    if passages > lean_threshold:
        return IVF
    return HNSW if passages > ann_threshold else FLAT


def params_for(kind: str, passages: int) -> IndexParams:
    if kind == HNSW:
        return IndexParams(
            HNSW, CODES, HNSW_NEIGHBOURS, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH_MIN, rerank="exact float32"
        )
    if kind == IVF:
        nlist = max(IVF_MIN_LISTS, int(IVF_LISTS_PER_SQRT * math.sqrt(max(passages, 1))))
        nlist = max(1, min(nlist, passages // IVF_TRAIN_PER_LIST))  # k-means needs IVF_TRAIN_PER_LIST per list
        nprobe = min(nlist, max(IVF_MIN_NPROBE, round(IVF_NPROBE_SHARE * nlist)))
        return IndexParams(IVF, CODES, nlist=nlist, nprobe=nprobe, rerank="exact float32")
    if kind == FLAT:
        return IndexParams(FLAT)
    raise ValueError(f"unknown index kind {kind!r}")


@contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """Run a block with `count` OpenMP threads in FAISS, restoring the previous number."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a float32 .npy matrix, read (not mapped) so a build's memory stays bounded."""
    matrix = np.load(path, mmap_mode="r")
    d = matrix.shape[1]
    offset = matrix.offset + start * d * 4
    del matrix
    with open(path, "rb") as f:
        f.seek(offset)
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * d).reshape(-1, d)


def build_ann(vectors_path: Path, params: IndexParams, threads: int) -> faiss.Index | None:
    """The ANN index over the vectors in `vectors_path` (None for the flat kind), added chunk by chunk."""
    if params.kind == FLAT:
        return None
    shape = np.load(vectors_path, mmap_mode="r").shape
    n, d = int(shape[0]), int(shape[1])
    qtype: Any = faiss.ScalarQuantizer.QT_8bit
    index: Any
    if params.kind == HNSW and params.codes == FLAT_CODES:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m or HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction or HNSW_EF_CONSTRUCTION
    elif params.kind == HNSW:
        index = faiss.IndexHNSWSQ(d, qtype, params.hnsw_m or HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction or HNSW_EF_CONSTRUCTION
    else:
        nlist = params.nlist or IVF_MIN_LISTS
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
    with faiss_threads(threads):
        index.train(_training_sample(vectors_path, n, params))
        for start in range(0, n, CHUNK_ROWS):
            index.add(read_rows(vectors_path, start, min(n, start + CHUNK_ROWS)))
    return index


def _training_sample(vectors_path: Path, n: int, params: IndexParams) -> np.ndarray:
    """Evenly spaced rows: SQ_TRAIN for the 8-bit ranges, k-means IVF_TRAIN_PER_LIST per list."""
    wanted = min(n, IVF_TRAIN_MAX, params.nlist * IVF_TRAIN_PER_LIST if params.nlist else SQ_TRAIN)
    matrix = np.load(vectors_path, mmap_mode="r")
    rows = np.linspace(0, n - 1, num=wanted, dtype=np.int64)
    return np.ascontiguousarray(matrix[rows], dtype=np.float32)


def save_ann(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


@dataclass(frozen=True)
class RowFilter:
    """The passages a filter allows: a mask over rows and the same rows as sorted ids."""

    mask: np.ndarray
    rows: np.ndarray

    @property
    def share(self) -> float:
        return len(self.rows) / max(1, len(self.mask))

    @property
    def nbytes(self) -> int:
        return int(self.mask.nbytes + self.rows.nbytes)


class DenseIndex:
    """A snapshot's vectors (memory-mapped) and its ANN index if any. Read-only, safe to share between threads."""

    def __init__(self, vectors: np.ndarray, ann: faiss.Index | None, params: IndexParams) -> None:
        self.vectors = vectors
        self.ann = ann
        self.params = params

    @classmethod
    def open(cls, folder: Path, params: IndexParams) -> DenseIndex:
        # A plain ndarray over the mapping: np.memmap's Python-level indexing costs ~8 µs a lookup.
        vectors = np.asarray(np.load(folder / VECTORS_FILE, mmap_mode="r"))
        ann = None
        if params.kind != FLAT:
            # MMAP_IFC maps the codes of HNSW storage (the graph is read); MMAP maps IVF inverted lists.
            flags = faiss.IO_FLAG_MMAP_IFC if params.kind == HNSW else faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
            ann = faiss.read_index(str(folder / ANN_FILE), flags)
        return cls(vectors, ann, params)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def search(self, query: np.ndarray, n: int, allowed: RowFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and cosine scores of the `n` nearest passages (among `allowed` ones), best first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if allowed is None:
            n = min(n, self.size)
            if n <= 0:
                return _empty()
            return self.exact(query, n) if self.ann is None else self.approximate(query, n)
        n = min(n, len(allowed.rows))
        if n <= 0:
            return _empty()
        if self.ann is None or allowed.share <= self.params.exact_filter_max_share:
            return self.exact(query, n, allowed.rows)
        fetch = min(self.size, math.ceil(n / allowed.share * OVERFETCH_MARGIN))
        rows, scores = self.approximate(query, fetch)
        keep = allowed.mask[rows]
        if int(keep.sum()) >= n:
            return rows[keep][:n], scores[keep][:n]
        return self.exact(query, n, allowed.rows)

    def exact(self, query: np.ndarray, n: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every row, or over `rows` (sorted): the reference the ANN is measured against."""
        if rows is not None:
            return _top(np.asarray(rows, dtype=np.int64), self.scores_of(rows, query), n)
        best_rows = np.zeros(0, dtype=np.int64)
        best_scores = np.zeros(0, dtype=np.float32)
        for start in range(0, self.size, CHUNK_ROWS):
            stop = min(self.size, start + CHUNK_ROWS)
            ids = np.arange(start, stop, dtype=np.int64)
            scores = self.vectors[start:stop] @ query
            best_rows, best_scores = _top(np.concatenate((best_rows, ids)), np.concatenate((best_scores, scores)), n)
        return best_rows, best_scores

    def scores_of(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """The query's inner product with each of `rows` (sorted), in their order.

        The rows are gathered GATHER_ROWS at a time into one small reused buffer that
        stays in the core's cache while it is multiplied: measured at 1M passages on a
        9% filter, 35-48 ms for gathering 16k rows at a time into fresh memory, 22-23
        ms this way; the rest is reading ~140 MB of scattered rows (a contiguous scan
        of as many bytes takes ~8 ms here).
        """
        rows = np.asarray(rows)
        scores = np.empty(len(rows), dtype=np.float32)
        if not len(rows):
            return scores
        if rows[0] < 0 or rows[-1] >= self.size:
            raise ValueError(f"rows {rows[0]}..{rows[-1]} are not all among the {self.size} vectors")
        block = np.empty((min(GATHER_ROWS, len(rows)), self.dimension), dtype=np.float32)
        for start in range(0, len(rows), GATHER_ROWS):
            ids = rows[start : start + GATHER_ROWS]
            part = block[: len(ids)]
            np.take(self.vectors, ids, axis=0, out=part, mode="clip")  # "raise" would copy through a buffer
            np.matmul(part, query, out=scores[start : start + len(ids)])
        return scores

    def approximate(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """ANN candidates re-ranked by their exact cosine from `vectors.npy`."""
        assert self.ann is not None
        params: Any
        if self.params.kind == HNSW:
            ef = max(self.params.ef_search_min or HNSW_EF_SEARCH_MIN, HNSW_EF_SEARCH_FACTOR * n)
            params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
        else:
            params = faiss.SearchParametersIVF(nprobe=self.params.nprobe)  # type: ignore[call-arg]
        faiss.omp_set_num_threads(QUERY_THREADS)
        _, found = self.ann.search(query.reshape(1, -1), n, params=params)
        rows = found[0][found[0] >= 0].astype(np.int64)
        rows.sort()  # reading the memory map in row order touches each page once
        return _top(rows, self.vectors[rows] @ query, n)

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)


def _top(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best (row, score) pairs, best first; equal scores in row order."""
    if len(rows) > n:
        keep = np.argpartition(-scores, n - 1)[:n]
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order].astype(np.float32, copy=False)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


def search(
    dense: DenseIndex, query: np.ndarray, n: int, allowed: RowFilter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Module-level form of `DenseIndex.search` (benchmarks call it so)."""
    return dense.search(query, n, allowed)
