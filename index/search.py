"""The one search function of linklens: `Searcher`, used by the CLI, the HTTP server and `eval`.

Query path: encode the query with the snapshot's ONNX encoder, take the top
`SEARCH_DEPTH` passages (the same for every k) from FAISS and from BM25, rank articles in each, fuse the
two article rankings (standardised scores, dense weighted 1.5 : 1), cut to k, and render each result with a snippet
of its best passage. Importing this module and searching never imports torch,
sentence-transformers or transformers (a test checks `sys.modules`).

Snapshots are swapped atomically: a search reads `self._loaded` once and keeps
that snapshot for its whole run, so `reload_if_changed` never disturbs a search
in flight.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from index import lexical, snapshot, vectors
from index.filters import Filters, section_filter
from index.fusion import RRF, ZSCORE, ArticleRanking, fuse, group_by_article
from index.limits import DEFAULT_K, MAX_K, MIN_K
from index.meta import META_FILE, ArticleColumns, ArticleRow, MetaReader
from index.model_ref import configured_model
from index.query_encoder import PrefixedQueryEncoder, QueryEncoder, encoder_file, open_query_encoder
from index.snippets import make_snippet
from index.vectors import RowFilter
from ingest.errors import BadQueryError
from ingest.models import SectionPath, section_label
from ingest.settings import Settings
from ingest.textform import nfc

logger = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "bm25")
FUSION_MODES = {ZSCORE: "hybrid", RRF: "hybrid", "dense": "dense", "bm25": "bm25"}
# The weight of the BM25 ranking in hybrid fusion; the dense ranking's is the setting `dense_weight`.
BM25_WEIGHT = 1.0
# Candidates per retriever: enough that grouping passages into articles still
# leaves MAX_K articles. The depth is the same for every k (issue 17): the fused
# order depends on the candidate lists (z-scores standardise over them), so a
# depth that grew with k made the first 10 of a k=50 search differ from a k=10
# search. k only cuts; every search looks as deep as the deepest one.
CANDIDATES_PER_RESULT = 5
SEARCH_DEPTH = CANDIDATES_PER_RESULT * MAX_K
SCORE_DIGITS = 6
# Threads that score BM25 while hybrid searches encode their queries: the two halves of a search
# run on two cores (measured at 1M passages: the query encoder ~6 ms, BM25 ~2.3 ms of CPU).
# Beyond this many searches at once, BM25 scorings queue; they are CPU work, the cores are the limit.
BESIDE_THREADS = 4
BLAS_THREADS = 1
WARMUP_QUERY = "warm up the query encoder"


@dataclass(frozen=True)
class SearchResult:
    """One article in a response. `article_id` links to `article`/`similar`; `to_dict` adds it as `id` if asked."""

    rank: int
    url: str
    title: str
    section: SectionPath
    host: str
    score: float
    snippet: str
    archived_url: str | None
    article_id: int
    lists: tuple[str, ...] = ()

    def to_dict(self, with_id: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {"id": self.article_id} if with_id else {}
        return shown | {
            "rank": self.rank,
            "url": self.url,
            "title": self.title,
            "section": section_label(self.section),
            "section_path": list(self.section),
            "lists": list(self.lists),
            "host": self.host,
            "score": self.score,
            "snippet": self.snippet,
            "archived_url": self.archived_url,
        }


@dataclass(frozen=True)
class SearchResponse:
    query: str
    took_ms: float
    results: list[SearchResult]

    def to_dict(self, with_ids: bool = False) -> dict[str, Any]:
        results = [r.to_dict(with_ids) for r in self.results]
        return {"query": self.query, "took_ms": self.took_ms, "results": results}


class _Loaded:
    """Everything read from one snapshot folder: memory maps and a few small tables. Never mutated but for its memo."""

    encoder: PrefixedQueryEncoder

    def __init__(self, folder: Path, settings: Settings, reuse: _Loaded | None = None) -> None:
        ref = configured_model(settings)
        self.folder = folder
        self.manifest = snapshot.Manifest.load(folder)
        snapshot.check_model(self.manifest, ref.id)
        self.dense = vectors.DenseIndex.open(folder, vectors.IndexParams.from_dict(self.manifest.index))
        self.lexical = lexical.LexicalIndex.load(folder / snapshot.BM25_DIR, self.manifest.passages)
        self.meta = MetaReader(folder / META_FILE)
        self.columns = ArticleColumns(folder)
        self.row_article = self.columns.row_article
        file = encoder_file(folder, settings.query_precision)
        # What queries are encoded with: the ONNX file used, or the torch fallback.
        self.query_encoder_file = file or "sentence-transformers"
        self.encoder_identity = _file_identity(folder / file) if file else None
        if reuse is not None and reuse.encoder_identity is not None and reuse.encoder_identity == self.encoder_identity:
            raw: QueryEncoder = reuse.encoder.inner  # same hard-linked export: skip a new session
        else:
            raw = open_query_encoder(folder, ref.location, self.manifest.dimension, settings.query_precision)
        self.encoder = PrefixedQueryEncoder(raw, self.manifest.query_prefix)
        self.sections = self.columns.sections
        self.filters = Filters(self.columns)

    @property
    def snapshot_id(self) -> str:
        return self.manifest.snapshot_id

    @cached_property
    def articles(self) -> list[ArticleRow]:
        """Every article row, in list order. Not used on the query path (tools and benchmarks only)."""
        return self.meta.articles()

    def filter_rows(self, section: SectionPath | None, host: str | None, list_name: str | None = None
                    ) -> RowFilter | None:
        """The passages the filters allow; None when there is no filter (memoised within a byte budget)."""
        return self.filters.rows(section, host, list_name)

    def article_rows(self, indexes: list[int]) -> list[ArticleRow]:
        """The stored rows of articles by their position in the list."""
        ids = [int(self.columns.ids[i]) for i in indexes]
        found = self.meta.articles_by_id(ids)
        return [found[i] for i in ids]


class Searcher:
    """Search one index snapshot; open with `Searcher.open(settings)`. Safe to share between threads."""

    def __init__(self, settings: Settings, loaded: _Loaded) -> None:
        self._settings = settings
        self._loaded = loaded
        self._reload_lock = threading.Lock()
        self._beside = ThreadPoolExecutor(BESIDE_THREADS, thread_name_prefix="linklens-bm25")

    @classmethod
    def open(cls, settings: Settings, folder: Path | None = None) -> Searcher:
        """Load the snapshot CURRENT points to (or `folder`). NotBuiltError if none; SnapshotMismatchError on
        another model.

        Also limits numpy's BLAS to one thread for the whole process: a search's
        matrix products are small, and OpenBLAS's default of one thread per core
        made a 10k-passage exact scan take 7.4 ms of wall and 9.4 ms of CPU instead
        of 2.0 and 1.5 (measured with searches a few ms apart: its threads must be
        woken for every product, and they compete with the other searches' threads).
        """
        threadpool_limits(BLAS_THREADS, user_api="blas")
        if folder is None:
            folder = snapshot.current_folder(settings.snapshots_dir, settings.data_dir)
        searcher = cls(settings, _Loaded(folder, settings))
        searcher._warm_up()
        return searcher

    def after_fork(self) -> None:
        """In a worker forked from the process that opened this searcher: reopen what a fork breaks.

        Kept from the parent (shared pages): the memory maps, the tables, the ONNX
        session, which runs with one intra-op thread and so owns no thread pool a
        fork would lose (`index.query_encoder.SESSION_THREADS`). Reopened: the SQLite
        connection, the BM25 thread pool and the locks, which might have been held by
        a thread that does not exist in the child.
        """
        self._reload_lock = threading.Lock()
        self._beside = ThreadPoolExecutor(BESIDE_THREADS, thread_name_prefix="linklens-bm25")
        self._loaded.meta.reopen_after_fork()

    @property
    def snapshot_id(self) -> str:
        return self._loaded.snapshot_id

    def reload_if_changed(self) -> bool:
        """Swap to the snapshot CURRENT now names, if it changed; True when it did.

        The new snapshot is fully loaded before the swap; a failure to load it
        raises and leaves this searcher on the old one.
        """
        with self._reload_lock:
            folder = snapshot.current_folder(self._settings.snapshots_dir, self._settings.data_dir)
            if folder.name == self._loaded.folder.name:
                return False
            fresh = _Loaded(folder, self._settings, reuse=self._loaded)
            fresh.encoder.encode(WARMUP_QUERY)
            self._loaded = fresh
            logger.info("now searching snapshot %s", fresh.snapshot_id)
            return True

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        section: Sequence[str] | None = None,
        host: str | None = None,
        mode: str | None = None,
        list_name: str | None = None,
    ) -> SearchResponse:
        """The k best articles for `query`, best first.

        `mode` is "hybrid" (dense + BM25 fused), "dense" or "bm25"; None uses the
        setting LINKLENS_FUSION. `section` is a section path, its headings top first
        (`("Scalability",)`, `("Scalability", "Sharding")`; a str is one heading, so
        `"CI / CD"` is the heading "CI / CD"), matched heading by heading, case-insensitively,
        and keeps the sections below it; `host` matches the article's site and its
        subdomains; `list_name` keeps the articles that list cites (its name,
        case-insensitively) and, with `section`, those it files under that section.
        Equal scores rank in list order.
        """
        started = time.perf_counter()
        text = nfc(" ".join((query or "").split()))  # the form the index stores text in
        if not text:
            raise BadQueryError("the query is empty — type a few words, e.g. linklens search 'database sharding'")
        _check_k(k)
        mode = self._mode(mode)
        loaded = self._loaded
        allowed = loaded.filter_rows(section_filter(section), host, list_name)
        stems = lexical.terms(text)
        candidates = self._depth()
        mask = None if allowed is None else allowed.mask
        rankings: list[ArticleRanking] = []
        beside: Future[tuple[np.ndarray, np.ndarray]] | None = None
        if mode == "hybrid":  # BM25 scores on another core while the query is encoded (both release the GIL)
            beside = self._beside.submit(loaded.lexical.top, stems, candidates, mask)
        if mode in ("dense", "hybrid"):
            vector = loaded.encoder.encode(text)
            rows, scores = loaded.dense.search(vector, candidates, allowed)
            rankings.append(group_by_article(rows, scores, loaded.row_article))
        if mode in ("bm25", "hybrid"):
            rows, scores = beside.result() if beside is not None else loaded.lexical.top(stems, candidates, mask)
            rankings.append(group_by_article(rows, scores, loaded.row_article))
        ranked = rankings[0] if len(rankings) == 1 else self._fuse(rankings)
        results = _render(loaded, ranked.head(k), frozenset(stems))
        return SearchResponse(text, _elapsed_ms(started), results)

    def similar(self, article_id: int, k: int = DEFAULT_K) -> SearchResponse:
        """Articles closest to `article_id` by the mean of its passage vectors ("more like this")."""
        started = time.perf_counter()
        _check_k(k)
        loaded = self._loaded
        article = loaded.meta.articles_by_id([article_id]).get(article_id)
        if article is None:
            raise BadQueryError(f"no article {article_id} in snapshot {loaded.snapshot_id} — find ids with a search")
        own_rows = np.arange(article.first_row, article.first_row + article.passage_count)
        centre = loaded.dense.vectors_of(own_rows).mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        candidates = self._depth() + article.passage_count
        rows, scores = loaded.dense.search(centre, candidates)
        ranked = group_by_article(rows, scores, loaded.row_article).without(article.position)
        return SearchResponse(article.title, _elapsed_ms(started), _render(loaded, ranked.head(k), frozenset()))

    def article(self, article_id: int) -> dict[str, Any] | None:
        """Stored metadata, crawl state and passages of one article; None if it is not in this snapshot."""
        return self._loaded.meta.article(article_id)

    def sections(self) -> list[tuple[SectionPath, int]]:
        """Every valid section filter (a path of headings) with its article count, in list order.

        Each section is followed by its subsections (longer paths), so a UI can
        indent them; all of them are accepted by `search(section=...)`.
        """
        return list(self._loaded.sections)

    def lists(self) -> list[dict[str, Any]]:
        """The lists of the indexed collection: name, URL, last crawl, articles and their link states."""
        return [dict(entry) for entry in self._loaded.columns.lists]

    def urls(self) -> frozenset[str]:
        """Every article URL in the snapshot (evaluation checks its judgements against it)."""
        return frozenset(self._loaded.meta.urls())

    def stats(self) -> dict[str, Any]:
        m = self._loaded.manifest
        return {
            "snapshot_id": m.snapshot_id,
            "model": m.model,
            "dimension": m.dimension,
            "passages": m.passages,
            "articles": m.articles,
            "documents": m.documents,
            "index_kind": m.index_kind,
            "index": dict(m.index),
            "query_encoder": m.query_encoder,
            "query_encoder_file": self._loaded.query_encoder_file,
            "max_seq_length": m.max_seq_length,
            "query_prefix": m.query_prefix,
            "passage_prefix": m.passage_prefix,
            "built_at": m.built_at,
        }

    def close(self) -> None:
        """Release the snapshot's files. Searches must not run after this."""
        self._beside.shutdown(wait=False)
        self._loaded.meta.close()

    def _fuse(self, rankings: list[ArticleRanking]) -> ArticleRanking:
        """Dense and BM25 article rankings fused: z-scores by default, RRF when LINKLENS_FUSION=rrf."""
        s = self._settings
        method = RRF if s.fusion == RRF else ZSCORE
        return fuse(rankings, (s.dense_weight, BM25_WEIGHT), method, s.rrf_k)

    def _depth(self) -> int:
        """Candidates per retriever, whatever k: the setting LINKLENS_CANDIDATES, at least SEARCH_DEPTH."""
        return max(self._settings.candidates, SEARCH_DEPTH)

    def _mode(self, mode: str | None) -> str:
        chosen = FUSION_MODES[self._settings.fusion] if mode is None else mode
        if chosen not in MODES:
            raise BadQueryError(f"unknown mode {mode!r} — use one of: {', '.join(MODES)}")
        return chosen

    def _warm_up(self) -> None:
        """First onnxruntime run allocates its buffers; do it before the first real query is timed."""
        self._loaded.encoder.encode(WARMUP_QUERY)


def _render(loaded: _Loaded, ranked: ArticleRanking, stems: frozenset[str]) -> list[SearchResult]:
    rows = ranked.rows.tolist()
    texts = loaded.meta.passage_texts(rows)
    indexes = ranked.articles.tolist()
    articles = loaded.article_rows(indexes)
    out = []
    for rank, (a, index, score, row) in enumerate(
        zip(articles, indexes, ranked.scores.tolist(), rows, strict=True), start=1
    ):
        out.append(
            SearchResult(
                rank=rank,
                url=a.url,
                title=a.title,
                section=a.sections[0] if a.sections else (),
                host=a.host,
                score=round(score, SCORE_DIGITS),
                snippet=make_snippet(texts.get(row, ""), stems),
                archived_url=a.archived_url if a.state == "archived" else None,
                article_id=a.id,
                lists=loaded.columns.lists_of(index),
            )
        )
    return out


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not MIN_K <= k <= MAX_K:
        raise BadQueryError(f"k must be a whole number from {MIN_K} to {MAX_K}, got {k!r}")


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
