"""Build a new index snapshot from the page store: passages → embeddings → FAISS + BM25 → snapshot.

Incremental by content: passage ids are hashes of their text and context, and
embeddings are cached by (model, passage id), so a rebuild after a recrawl embeds
only new or changed passages. A rebuild with nothing new never loads torch.
Every build still writes a complete new snapshot (indexes are rebuilt from the
vectors, which takes well under a second per 10k passages), so a snapshot never
depends on another.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from index import lexical, meta, snapshot, vectors
from index.embedder import ONNX_EMBED_MAX_PASSAGES, Embedder, Progress, core_count, encode_with_onnx
from index.embedding_cache import EmbeddingCache
from index.model_ref import ModelProfile, ModelRef, configured_model
from index.passages import Passage, article_passages
from ingest.errors import SourceError
from ingest.models import Article
from ingest.settings import VERSION, Settings
from ingest.store import Store

logger = logging.getLogger(__name__)

EMBEDDING_CACHE_FILE = "embeddings.sqlite3"
QUERY_ENCODER_ONNX = "onnx"
QUERY_ENCODER_TORCH = "sentence-transformers"
VERSIONED_PACKAGES = ("faiss-cpu", "bm25s", "onnxruntime", "tokenizers", "sentence-transformers", "torch", "numpy")


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
    pruned: list[str] = field(default_factory=list)


def build_index(
    settings: Settings,
    store: Store,
    rebuild: bool = False,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> BuildReport:
    """Build and publish a snapshot of every article in `store`; returns what was done.

    `rebuild=True` ignores the embedding cache and the cached ONNX export (use after
    changing a model in place). `progress(done, total)` is called while embedding.
    Links without text (dead, blocked, not fetched yet) are indexed by their title card.
    `embedder` lets a long-lived process (tests, benchmarks) reuse a loaded model.
    """
    started = time.perf_counter()
    ref = configured_model(settings)
    articles = list(store.articles())
    if not articles:
        raise SourceError(f"the page store {store.path} holds no links yet — run: linklens crawl LIST first")
    passages = [
        p
        for a in articles
        for p in article_passages(
            a, settings.passage_words, settings.passage_overlap_words, settings.passage_headings
        )
    ]
    if embedder is None or embedder.ref != ref:
        embedder = Embedder(ref)
    ready_export = None if rebuild else existing_export(settings.cache_dir, ref)
    profile = _model_profile(ready_export, embedder).with_settings(settings)
    with EmbeddingCache.open(settings.cache_dir / EMBEDDING_CACHE_FILE) as cache:
        matrix, embedded, cached = _embed(passages, embedder, profile, cache, rebuild, ready_export, progress)
        cache.keep_only(profile.cache_key(ref), (p.id for p in passages))
    encoder_dir = _query_encoder(settings.cache_dir, ref, embedder, rebuild)
    kind = vectors.choose_kind(len(passages), settings.index_kind, settings.ann_threshold)
    corpus_hash = _corpus_hash(articles, passages)
    work, snapshot_id = snapshot.start(settings.snapshots_dir, snapshot.new_snapshot_id(corpus_hash))
    try:
        vectors.save(vectors.build(matrix, kind, core_count()), work / snapshot.VECTORS_FILE)
        _, retriever = lexical.LexicalIndex.build([p.indexed_text for p in passages])
        retriever.save(str(work / snapshot.BM25_DIR), show_progress=False)
        meta.write(work / meta.META_FILE, articles, passages)
        if encoder_dir is not None:
            from index.onnx_export import link_into

            link_into(encoder_dir, work)
        seconds = time.perf_counter() - started
        manifest = snapshot.Manifest(
            snapshot_id=snapshot_id,
            model=ref.id,
            dimension=int(matrix.shape[1]),
            passages=len(passages),
            articles=len(articles),
            documents=sum(1 for a in articles if a.document is not None and a.document.text.strip()),
            corpus_hash=corpus_hash,
            index_kind=kind,
            query_encoder=QUERY_ENCODER_ONNX if encoder_dir is not None else QUERY_ENCODER_TORCH,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_seconds=round(seconds, 3),
            passage_words=settings.passage_words,
            passage_overlap_words=settings.passage_overlap_words,
            versions=_versions(),
            max_seq_length=profile.max_seq_length,
            query_prefix=profile.query_prefix,
            passage_prefix=profile.passage_prefix,
        )
        manifest.save(work)
        snapshot.publish(settings.snapshots_dir, work, snapshot_id)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    pruned = snapshot.prune(settings.snapshots_dir, settings.keep_snapshots)
    report = BuildReport(
        snapshot_id=snapshot_id,
        articles=manifest.articles,
        documents=manifest.documents,
        passages=len(passages),
        embedded=embedded,
        cached=cached,
        seconds=round(time.perf_counter() - started, 3),
        index_kind=kind,
        model=ref.id,
        query_encoder=manifest.query_encoder,
        pruned=pruned,
    )
    logger.info(
        "built snapshot %s: %d articles, %d passages (%d embedded, %d cached) in %.1fs",
        report.snapshot_id, report.articles, report.passages, report.embedded, report.cached, report.seconds,
    )  # fmt: skip
    return report


def _model_profile(ready_export: Path | None, embedder: Embedder) -> ModelProfile:
    """How the model reads text: from its verified export's config when there is one (no torch), else the model."""
    if ready_export is not None:
        from index.query_encoder import EncoderConfig

        c = EncoderConfig.load(ready_export)
        return ModelProfile(c.dimension, c.max_seq_length, c.query_prefix, c.passage_prefix)
    return embedder.profile


def _embed(
    passages: list[Passage],
    embedder: Embedder,
    profile: ModelProfile,
    cache: EmbeddingCache,
    rebuild: bool,
    ready_export: Path | None,
    progress: Progress | None,
) -> tuple[np.ndarray, int, int]:
    """The passage matrix (row i = passage i), embedding only what the cache lacks.

    Each passage is embedded with the model's passage prefix in front, and cached
    under a key that names that prefix. A few new passages go through the cached
    ONNX export when there is one, so a small incremental build never imports torch.
    """
    key = profile.cache_key(embedder.ref)
    ids = [p.id for p in passages]
    found = {} if rebuild else cache.get_many(key, ids)
    if found:
        sizes = {v.shape[0] for v in found.values()}
        if len(sizes) > 1:  # a model changed size in place: trust nothing cached
            found = {}
    texts = {p.id: profile.passage_prefix + p.indexed_text for p in passages if p.id not in found}
    if texts:
        if ready_export is not None and len(texts) <= ONNX_EMBED_MAX_PASSAGES and not embedder.loaded:
            fresh = encode_with_onnx(ready_export, list(texts.values()), progress)
        else:
            fresh = embedder.encode(list(texts.values()), progress)
        cache.put_many(key, zip(texts, fresh, strict=True))
        found.update(zip(texts, fresh, strict=True))
    elif progress:
        progress(0, 0)
    matrix = np.stack([found[i] for i in ids]).astype(np.float32, copy=False)
    embedded = sum(1 for p in passages if p.id in texts)
    return matrix, embedded, len(passages) - embedded


def existing_export(cache_dir: Path, ref: ModelRef) -> Path | None:
    """The model's verified ONNX export if a previous build made one (checked without loading the model)."""
    from index.onnx_export import export_dir
    from index.query_encoder import ENCODER_FILE

    folder = export_dir(cache_dir, ref)
    return folder if (folder / ENCODER_FILE).exists() else None


def _query_encoder(cache_dir: Path, ref: ModelRef, embedder: Embedder, rebuild: bool) -> Path | None:
    """The cached ONNX export for the model, made now if missing; None if the model cannot be exported."""
    from index.onnx_export import cached_export

    return cached_export(cache_dir, ref, lambda: embedder.model, refresh=rebuild)


def _corpus_hash(articles: list[Article], passages: list[Passage]) -> str:
    digest = hashlib.sha256()
    for a in articles:
        digest.update(f"{a.link_id}\t{a.url}\t{a.state.value}\t{'|'.join(a.sections)}\n".encode())
    for p in passages:
        digest.update(p.id.encode())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {"linklens": VERSION}
    for package in VERSIONED_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "absent"
    return out
