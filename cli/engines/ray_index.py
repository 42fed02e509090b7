"""`linklens index --engine ray`: passages and embeddings as Ray Data stages, then the same snapshot build.

Two phases:
1. Ray Data: `articles/` → passages (stateless tasks, `article_passages`) → left join with the
   embedding cache `embeddings/<model key>/` by passage id → an actor pool that embeds only
   the passages the cache lacked (`PassageEmbedder`: one model per actor) → `passages/`
   (passages with their vectors, Parquet, replaced atomically).
2. The driver streams `passages/` and `articles/`, both sorted by list position, into the
   engine-neutral `index.build.build_snapshot`: the same snapshot format, written the same
   way as the local engine's, so serving cannot tell which engine built it.

Incremental like the local engine: the embedding cache is read (joined) before embedding, every
new vector is appended to it as a part file as soon as its batch is done (so a build killed
midway loses no finished embedding), and after a good build it is rewritten as exactly the
vectors of the indexed passages (the local cache's `keep_only`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from cli.engines.datasets import ARTICLES, EMBEDDINGS, PASSAGES, dataset_uri
from cli.engines.ray_index_progress import ProgressBars
from cli.engines.ray_runtime import quiet_ray_data, ray_session
from cli.engines.ray_snapshot import ROWS_PER_SORT_BLOCK, CacheRewriter, index_batches, read_blocks
from cli.engines.ray_stages import PassageEmbedder, cut_passages
from cli.engines.store_export import dataset_exists, dataset_filesystem, dataset_rows, replace_folder
from index import snapshot
from index.build import (
    EmbedCounts,
    ListSource,
    build_snapshot,
    existing_export,
    list_sources,
    model_profile_of,
    query_encoder_dir,
)
from index.embedder import Embedder
from index.model_ref import ModelProfile, ModelRef, configured_model
from ingest.errors import SourceError
from ingest.settings import Settings
from ingest.store import Store

logger = logging.getLogger(__name__)

# Articles per task of the passage stage: cutting is cheap, so few large tasks.
ARTICLES_PER_TASK = 256
PROGRESS_INTERVAL_S = 0.25
BLOCKS_PER_ACTOR = 8
# Blocks queued at an actor beyond the one it runs: Ray's default (4) hands out a small corpus's blocks
# up front, so one actor could hold the long articles while the other idles; two (one running, one
# waiting) keep them balanced without a gap between tasks.
TASKS_QUEUED_PER_ACTOR = 2
# The least Ray CPU share an embedding actor reserves (many actors on a small cluster).
MIN_ACTOR_CPUS = 0.1
NO_ARTICLES = (
    "no articles dataset at {uri} yet — run: linklens crawl LIST --engine ray "
    "(or, after a local crawl, linklens index --engine ray, which exports the page store)"
)


def cache_folder_name(key: str) -> str:
    """A folder name for an embedding cache key: the key itself when it is a safe name, else a slug and a hash."""
    if re.fullmatch(r"[A-Za-z0-9._-]{1,100}", key):
        return key
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:60]
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def embedding_cache_uri(cfg: Settings, key: str) -> str:
    """Where the embedding cache of one model key lives: `embeddings/<key as a folder name>`."""
    return dataset_uri(dataset_uri(cfg.datasets_location, EMBEDDINGS), cache_folder_name(key))


def run_ray_index(
    cfg: Settings, rebuild: bool, quiet: bool = False, kind: str | None = None, timings: dict[str, float] | None = None
) -> dict[str, object]:
    """Build and publish a snapshot with Ray Data; returns the same report as the local `run_index`.

    When the data folder has a page store (a local crawl), it is exported to `articles/` first,
    so the index is always of what was crawled; otherwise `articles/` must already be there
    (written by `linklens crawl --engine ray`, possibly on a cluster). `timings`, when given,
    receives the seconds each phase took (bench/ray_embed.py): `start_s` (export, Ray start),
    `passages_s` (cutting and embedding into `passages/`), `snapshot_s`, `total_s`; and `encode_s`
    (time the actors spent in the model, summed) with `threads_per_actor`, and `actor_start_s`
    (time the actors took to load the model, summed).
    """
    started = time.perf_counter()
    timings = {} if timings is None else timings
    sources = None
    # The build lock covers the export too: another build (or a finishing Ray crawl) cannot swap
    # `articles/` while this build reads it.
    with snapshot.build_lock(cfg.snapshots_dir):
        if cfg.store_path.exists():
            from cli.engines.store_export import export_articles

            export_articles(cfg)
            with Store.open(cfg.store_path) as store:
                sources = list_sources(store)  # each list's URL and last crawl, for GET /lists as the local build
        if not dataset_exists(cfg.datasets_location, ARTICLES):
            raise SourceError(NO_ARTICLES.format(uri=dataset_uri(cfg.datasets_location, ARTICLES)))
        return _build_on_ray(cfg, rebuild, quiet, kind, timings, started, sources)


def _build_on_ray(cfg: Settings, rebuild: bool, quiet: bool, kind: str | None, timings: dict[str, float],
                  started: float, sources: dict[str, ListSource] | None) -> dict[str, object]:
    """`run_ray_index` once `articles/` is in place, under the build lock."""
    ref = configured_model(cfg)
    embedder = Embedder(ref)
    ready_export = None if rebuild else existing_export(cfg.cache_dir, ref)
    profile = model_profile_of(ready_export, embedder).with_settings(cfg)
    counts = EmbedCounts()
    with ray_session(cfg) as ray, ProgressBars(quiet) as bars:
        quiet_ray_data(ray)
        timings["start_s"] = time.perf_counter() - started
        logger.info("Ray ready at %.1fs", timings["start_s"])
        cache_uri = embedding_cache_uri(cfg, profile.cache_key(ref))
        counts_by_stage = _embed_passages(ray, cfg, ref, profile, cache_uri, rebuild, bars)
        timings["encode_s"] = counts_by_stage.get("encode_ms", 0) / 1000
        timings["actor_start_s"] = counts_by_stage.get("actor_start_ms", 0) / 1000
        timings["threads_per_actor"] = _embedding_threads(ray, cfg.embed_actors)
        timings["passages_s"] = time.perf_counter() - started - timings["start_s"]
        logger.info("passages embedded and written at %.1fs", time.perf_counter() - started)
        cache = CacheRewriter(cache_uri)
        try:
            report = build_snapshot(
                cfg, index_batches(ray, cfg.datasets_location, counts, bars, cache), ref.id, profile,
                lambda: query_encoder_dir(cfg.cache_dir, ref, embedder, rebuild), counts=counts, kind=kind,
                unlocked=True, list_sources=sources,
            )  # fmt: skip
        except BaseException:
            cache.abort()
            raise
        cache.publish()
        timings["total_s"] = time.perf_counter() - started
        timings["snapshot_s"] = timings["total_s"] - timings["passages_s"] - timings["start_s"]
        logger.info("snapshot published, embedding cache rewritten at %.1fs", timings["total_s"])
    return asdict(report)


def _embedding_threads(ray: Any, actors: int) -> int:
    """Torch threads per embedding actor: the cluster's CPUs shared among the actors, at most one node's cores.

    Actors reserve less than that (`_actor_cpus`), but embedding is where the time goes, so
    each actor's torch uses its whole share of the cores.
    """
    from index.embedder import core_count

    total = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(core_count(), total // actors))


def _actor_cpus(ray: Any, actors: int) -> float:
    """Ray CPUs each embedding actor reserves: one, but never so many that no CPU is left for the read and
    passage tasks (actors holding every CPU would wait forever for input that cannot be scheduled)."""
    total = float(ray.cluster_resources().get("CPU", 1))
    return max(MIN_ACTOR_CPUS, min(1.0, (total - 1) / actors))


def _embed_passages(ray: Any, cfg: Settings, ref: ModelRef, profile: ModelProfile, cache_uri: str, rebuild: bool,
                    bars: ProgressBars) -> dict[str, int]:  # fmt: skip
    """Phase 1: cut, join with the embedding cache, embed what is missing, write `passages/` (replaced atomically).

    Returns the stages' counts (`ray_progress.StageCounter`)."""
    import uuid

    total = dataset_rows(cfg.datasets_location, ARTICLES)
    # At least a few blocks per actor: an actor takes a whole block as one task, so fewer would leave actors idle.
    blocks = max(read_blocks(total, ARTICLES_PER_TASK), min(total, BLOCKS_PER_ACTOR * cfg.embed_actors))
    articles = ray.data.read_parquet(dataset_uri(cfg.datasets_location, ARTICLES), override_num_blocks=blocks)
    counter = bars.start(ray, total)
    passages = articles.map_batches(
        cut_passages, batch_format="pyarrow", batch_size=ARTICLES_PER_TASK,
        fn_kwargs={"words": cfg.passage_words, "overlap": cfg.passage_overlap_words,
                   "headings": cfg.passage_headings, "progress": counter},
    )  # fmt: skip
    cache_location, cache_name = cache_uri.rsplit("/", 1)
    if not rebuild and dataset_exists(cache_location, cache_name):
        rows = dataset_rows(cache_location, cache_name)
        cached = ray.data.read_parquet(cache_uri, override_num_blocks=read_blocks(rows, ROWS_PER_SORT_BLOCK))
        cached = cached.select_columns(["id", "vector"])
        passages = passages.join(cached, join_type="left_outer", num_partitions=_partitions(ray), on=("id",))
    gpus = cfg.embed_gpus if int(ray.cluster_resources().get("GPU", 0)) else 0
    embedded = passages.map_batches(
        PassageEmbedder, batch_format="pyarrow", batch_size=cfg.embed_batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.embed_actors, max_tasks_in_flight_per_actor=TASKS_QUEUED_PER_ACTOR),
        num_cpus=_actor_cpus(ray, cfg.embed_actors), num_gpus=gpus or None,
        fn_constructor_kwargs={
            "model_id": ref.id, "location": ref.location, "passage_prefix": profile.passage_prefix,
            "cache_uri": cache_uri, "threads": _embedding_threads(ray, cfg.embed_actors),
            "device": "cuda" if gpus else "cpu", "progress": counter,
        },
    )  # fmt: skip
    fs, root = dataset_filesystem(cfg.datasets_location)
    work = f".{PASSAGES}.tmp-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=1) as pool:  # the pipeline runs while this thread draws progress
        written = pool.submit(embedded.write_parquet, dataset_uri(cfg.datasets_location, work))
        while not written.done():
            bars.poll()
            time.sleep(PROGRESS_INTERVAL_S)
        written.result()
    counts = bars.poll()
    replace_folder(fs, dataset_uri(root, work), dataset_uri(root, PASSAGES))
    return counts


def _partitions(ray: Any) -> int:
    return max(2, int(ray.cluster_resources().get("CPU", 1)))
