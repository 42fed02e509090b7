"""Build a new index snapshot, streamed: article batches → passages → vectors → files on disk.

Two layers:
* `build_snapshot(settings, batches, ...)` is the engine-neutral core. It takes an
  iterator of `IndexBatch` (articles, their passages, their vectors) and writes each
  batch to disk as it comes: vectors appended to `vectors.npy`, passages and
  articles to `meta.sqlite3` and the column files, BM25 postings spilled for the
  streaming BM25 builder. Nothing grows with the corpus in Python lists except
  a few numbers per article and the BM25 vocabulary. The local engine feeds it from
  the page store (below); a scale-out engine (issue 9: Ray Data writing Parquet)
  feeds it from its datasets by yielding the same batches.
* `build_index(settings, store, ...)` is the local engine: reads the store in
  batches, cuts passages, and takes vectors from the embedding cache, embedding only
  what it lacks (`embedded_batches`).

Incremental by content: passage ids are hashes of their text and context and
embeddings are cached by (model, passage id), so a rebuild after a recrawl
embeds only new or changed passages; a rebuild with nothing new never loads
torch. Every build still writes a complete new snapshot, so a snapshot never
depends on another. One build at a time per data folder (`snapshot.build_lock`);
a build killed at any point leaves CURRENT on the last good snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from index import snapshot, vectors
from index.bm25_build import StreamingBM25
from index.embedder import ONNX_EMBED_MAX_PASSAGES, Embedder, Progress, core_count, encode_with_onnx
from index.embedding_cache import EmbeddingCache
from index.meta import ListSource, MetaWriter
from index.model_ref import ModelProfile, ModelRef, configured_model
from index.passages import Passage, article_passages
from index.vector_file import VectorFileWriter
from ingest.errors import SourceError
from ingest.models import Article
from ingest.redact import public_source
from ingest.settings import VERSION, Settings
from ingest.store import Store

logger = logging.getLogger(__name__)

EMBEDDING_CACHE_FILE = "embeddings.sqlite3"
QUERY_ENCODER_ONNX = "onnx"
QUERY_ENCODER_TORCH = "sentence-transformers"
VERSIONED_PACKAGES = ("faiss-cpu", "bm25s", "onnxruntime", "tokenizers", "sentence-transformers", "torch", "numpy")
# Articles read from the store per batch: ~1-2k passages, enough for efficient
# embedding batches and SQLite inserts, small enough to keep memory flat.
ARTICLES_PER_BATCH = 256

BatchProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexBatch:
    """One step of a streamed build.

    `articles` in list order; `passages` are theirs, grouped by article in the same
    order (each article's passages contiguous, title card first); `vectors` is a
    float32 array, L2-normalised, row i the vector of `passages[i]`.
    """

    articles: Sequence[Article]
    passages: Sequence[Passage]
    vectors: np.ndarray


@dataclass
class EmbedCounts:
    """Filled in while batches stream: passages embedded now vs taken from the cache."""

    embedded: int = 0
    cached: int = 0


@dataclass(frozen=True)
class BuildReport:
    """What a build did: `embedded` passages went through the model, `cached` came from the cache."""

    snapshot_id: str
    articles: int
    documents: int
    passages: int
    embedded: int
    cached: int
    seconds: float
    index_kind: str
    model: str
    query_encoder: str
    index: dict[str, object] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


def build_index(
    settings: Settings,
    store: Store,
    rebuild: bool = False,
    progress: BatchProgress | None = None,
    embedder: Embedder | None = None,
    kind: str | None = None,
) -> BuildReport:
    """Build and publish a snapshot of every article in `store`; returns what was done.

    `rebuild=True` ignores the embedding cache and the cached ONNX export (use after
    changing a model in place). `progress(articles_done, articles_total)` is called
    after each batch. Links without text (dead, blocked, not fetched yet) are
    indexed by their title card. `embedder` lets a long-lived process (tests,
    benchmarks) reuse a loaded model. `kind` overrides LINKLENS_INDEX_KIND.
    """
    ref = configured_model(settings)
    total = store.article_count()
    if not total:
        raise SourceError(f"the page store {store.path} holds no links yet — run: linklens crawl LIST first")
    if embedder is None or embedder.ref != ref:
        embedder = Embedder(ref)
    counts = EmbedCounts()
    with (
        snapshot.build_lock(settings.snapshots_dir),
        EmbeddingCache.open(settings.cache_dir / EMBEDDING_CACHE_FILE) as cache,
    ):
        ready_export = None if rebuild else existing_export(settings.cache_dir, ref)
        profile = model_profile_of(ready_export, embedder).with_settings(settings)
        batches = embedded_batches(
            article_batches(store.articles(), ARTICLES_PER_BATCH), settings, embedder, profile, cache,
            rebuild=rebuild, ready_export=ready_export, counts=counts,
            progress=(lambda done: progress(done, total)) if progress else None,
        )  # fmt: skip
        report = build_snapshot(
            settings, batches, ref.id, profile, lambda: query_encoder_dir(settings.cache_dir, ref, embedder, rebuild),
            counts=counts, kind=kind, unlocked=True, list_sources=list_sources(store),
        )  # fmt: skip
        folder = settings.snapshots_dir / report.snapshot_id
        dropped = cache.keep_only(profile.cache_key(ref), _passage_ids(folder))
        logger.debug("dropped %d cached embeddings of passages no longer indexed", dropped)
    return report


def list_sources(store: Store) -> dict[str, ListSource]:
    """The collection's lists as the snapshot records them: URL and last crawl (UTC), by name.

    The URL is the public form of the list's source (`ingest.redact.public_source`): a snapshot is
    served to anyone, so it never holds credentials, a query string or a local folder."""
    out: dict[str, ListSource] = {}
    for row in store.lists(include_dropped=False):
        crawled = row["crawled_at"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(crawled)) if isinstance(crawled, float) else None
        out[str(row["name"])] = ListSource(url=public_source(str(row["source"])) or "", crawled_at=stamp)
    return out


def article_batches(articles: Iterable[Article], size: int) -> Iterator[list[Article]]:
    batch: list[Article] = []
    for article in articles:
        batch.append(article)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def model_profile_of(ready_export: Path | None, embedder: Embedder) -> ModelProfile:
    """How the model reads text: from its verified export's config when there is one (no torch), else the model."""
    if ready_export is not None:
        from index.query_encoder import EncoderConfig

        c = EncoderConfig.load(ready_export)
        return ModelProfile(c.dimension, c.max_seq_length, c.query_prefix, c.passage_prefix)
    return embedder.profile


def embedded_batches(
    batches: Iterable[Sequence[Article]],
    settings: Settings,
    embedder: Embedder,
    profile: ModelProfile,
    cache: EmbeddingCache,
    rebuild: bool,
    ready_export: Path | None,
    counts: EmbedCounts,
    progress: Callable[[int], None] | None = None,
) -> Iterator[IndexBatch]:
    """Cut each batch into passages and attach their vectors: cached ones, else freshly embedded.

    Each passage is embedded with the model's passage prefix in front, and cached
    under a key that names that prefix. The first ONNX_EMBED_MAX_PASSAGES new passages of a build go through the cached
    ONNX export when there is one (no torch import for a small incremental build);
    beyond that the sentence-transformers model is loaded once and used.
    """
    done = 0
    dimension: int | None = None
    key = profile.cache_key(embedder.ref)
    for articles in batches:
        passages = [
            p
            for a in articles
            for p in article_passages(
                a, settings.passage_words, settings.passage_overlap_words, settings.passage_headings
            )
        ]
        ids = [p.id for p in passages]
        found = {} if rebuild else cache.get_many(key, ids, dimension)
        missing = {p.id: profile.passage_prefix + p.indexed_text for p in passages if p.id not in found}
        if missing:
            texts = list(missing.values())
            small = counts.embedded + len(texts) <= ONNX_EMBED_MAX_PASSAGES
            if ready_export is not None and small and not embedder.loaded:
                fresh = encode_with_onnx(ready_export, texts)
            else:
                fresh = embedder.encode(texts)
            cache.put_many(key, zip(missing, fresh, strict=True))
            found.update(zip(missing, fresh, strict=True))
        matrix = np.stack([found[i] for i in ids]).astype(np.float32, copy=False) if ids else None
        if matrix is not None:
            if dimension is None:
                dimension = matrix.shape[1]
            elif matrix.shape[1] != dimension:  # a model changed size in place: the cache cannot be trusted
                raise SourceError(
                    f"cached embeddings of {embedder.ref.id} have mixed sizes — run: linklens index --rebuild"
                )
        embedded = sum(1 for i in ids if i in missing)
        counts.embedded += embedded
        counts.cached += len(ids) - embedded
        done += len(articles)
        if progress:
            progress(done)
        yield IndexBatch(articles, passages, matrix if matrix is not None else np.zeros((0, 0), np.float32))


def build_snapshot(
    settings: Settings,
    batches: Iterable[IndexBatch],
    model_id: str,
    profile: ModelProfile,
    query_encoder: Callable[[], Path | None],
    counts: EmbedCounts | None = None,
    kind: str | None = None,
    unlocked: bool = False,
    list_sources: Mapping[str, ListSource] | None = None,
) -> BuildReport:
    """Write the batches into a new snapshot, build its indexes, publish it; the engine-neutral core.

    `query_encoder()` is called once all batches are in and returns the folder of the
    model's verified ONNX export (hard-linked into the snapshot), or None to fall
    back to sentence-transformers at query time. `counts` reports embedded/cached
    passages (the caller's engine fills it). `kind` overrides LINKLENS_INDEX_KIND.
    Takes the data folder's build lock unless the caller holds it (`unlocked=True`
    means "already locked by me"). `list_sources` (by list name: URL, last crawl) is
    recorded beside each list's counts for `GET /lists`; without it lists have names and counts only.
    """
    if not unlocked:
        with snapshot.build_lock(settings.snapshots_dir):
            return build_snapshot(settings, batches, model_id, profile, query_encoder, counts, kind, unlocked=True,
                                  list_sources=list_sources)
    started = time.perf_counter()
    counts = counts or EmbedCounts()
    work = snapshot.start(settings.snapshots_dir)
    try:
        report = _write_snapshot(settings, work, batches, model_id, profile, query_encoder, counts, kind, started,
                                 list_sources)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    pruned = snapshot.prune(settings.snapshots_dir, settings.keep_snapshots)
    report = BuildReport(**{**report.__dict__, "pruned": pruned})
    logger.info(
        "built snapshot %s: %d articles, %d passages (%d embedded, %d cached), %s index, in %.1fs",
        report.snapshot_id, report.articles, report.passages, report.embedded, report.cached, report.index_kind,
        report.seconds,
    )  # fmt: skip
    return report


def _write_snapshot(
    settings: Settings,
    work: Path,
    batches: Iterable[IndexBatch],
    model_id: str,
    profile: ModelProfile,
    query_encoder: Callable[[], Path | None],
    counts: EmbedCounts,
    kind: str | None,
    started: float,
    list_sources: Mapping[str, ListSource] | None = None,
) -> BuildReport:
    meta = MetaWriter(work)
    bm25 = StreamingBM25(work / snapshot.BM25_DIR)
    vector_file = VectorFileWriter(work / snapshot.VECTORS_FILE)
    digest = hashlib.sha256()
    try:
        for batch in batches:
            meta.add(batch.articles, batch.passages)
            bm25.add([p.indexed_text for p in batch.passages])
            vector_file.append(batch.vectors)
            _hash_batch(digest, batch)
    except BaseException:
        meta.abort()
        bm25.abort()
        vector_file.abort()
        raise
    articles, passages = meta.finish(list_sources)
    if not articles:
        raise SourceError("there is nothing to index — run: linklens crawl LIST first")
    _, dimension = vector_file.finish()
    logger.info("streamed %d articles, %d passages in %.1fs", articles, passages, time.perf_counter() - started)
    bm25.finish()
    logger.info("BM25 written at %.1fs", time.perf_counter() - started)
    chosen = vectors.choose_kind(passages, kind or settings.index_kind, settings.ann_threshold, settings.lean_threshold)
    params = vectors.params_for(chosen, passages)
    ann = vectors.build_ann(work / snapshot.VECTORS_FILE, params, core_count())
    if ann is not None:
        vectors.save_ann(ann, work / snapshot.ANN_FILE)
        del ann
    logger.info("%s index built at %.1fs", chosen, time.perf_counter() - started)
    encoder_dir = query_encoder()
    if encoder_dir is not None:
        from index.onnx_export import link_into

        link_into(encoder_dir, work)
    corpus_hash = digest.hexdigest()
    snapshot_id = snapshot.free_id(settings.snapshots_dir, snapshot.new_snapshot_id(corpus_hash))
    seconds = round(time.perf_counter() - started, 3)
    manifest = snapshot.Manifest(
        snapshot_id=snapshot_id,
        model=model_id,
        dimension=dimension,
        passages=passages,
        articles=articles,
        documents=meta.documents,
        corpus_hash=corpus_hash,
        index_kind=chosen,
        query_encoder=QUERY_ENCODER_ONNX if encoder_dir is not None else QUERY_ENCODER_TORCH,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=seconds,
        passage_words=settings.passage_words,
        passage_overlap_words=settings.passage_overlap_words,
        index=params.to_dict(),
        versions=_versions(),
        max_seq_length=profile.max_seq_length,
        query_prefix=profile.query_prefix,
        passage_prefix=profile.passage_prefix,
    )
    manifest.save(work)
    snapshot.publish(settings.snapshots_dir, work, snapshot_id)
    return BuildReport(
        snapshot_id=snapshot_id,
        articles=articles,
        documents=meta.documents,
        passages=passages,
        embedded=counts.embedded,
        cached=counts.cached,
        seconds=seconds,
        index_kind=chosen,
        model=model_id,
        query_encoder=manifest.query_encoder,
        index=params.to_dict(),
    )


def _hash_batch(digest: hashlib._Hash, batch: IndexBatch) -> None:
    for a in batch.articles:
        filed = json.dumps([[f.list_name, *f.section] for f in a.filings], ensure_ascii=False)
        digest.update(f"{a.link_id}\t{a.url}\t{a.state.value}\t{filed}\t{'|'.join(a.lists)}\n".encode())
    for p in batch.passages:
        digest.update(p.id.encode())


def _passage_ids(folder: Path) -> Iterator[str]:
    """Every passage id of a published snapshot, read back from its metadata (never held all at once)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{folder / 'meta.sqlite3'}?mode=ro", uri=True)
    try:
        for (passage_id,) in conn.execute("SELECT id FROM passages"):
            yield passage_id
    finally:
        conn.close()


def existing_export(cache_dir: Path, ref: ModelRef) -> Path | None:
    """The model's verified ONNX export if a previous build made one (checked without loading the model)."""
    from index.onnx_export import export_dir
    from index.query_encoder import ENCODER_FILE

    folder = export_dir(cache_dir, ref)
    return folder if (folder / ENCODER_FILE).exists() else None


def query_encoder_dir(cache_dir: Path, ref: ModelRef, embedder: Embedder, rebuild: bool) -> Path | None:
    """The cached ONNX export for the model, made now if missing; None if the model cannot be exported."""
    from index.onnx_export import cached_export

    return cached_export(cache_dir, ref, lambda: embedder.model, refresh=rebuild)


def _versions() -> dict[str, str]:
    out = {"linklens": VERSION}
    for package in VERSIONED_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


__all__ = ["BuildReport", "IndexBatch", "Progress", "build_index", "build_snapshot"]
