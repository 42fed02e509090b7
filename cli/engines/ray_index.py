"""`linklens index --engine ray`: passages and embeddings as Ray Data stages, then the same snapshot build.

Two phases:
1. Ray Data: `articles/` → passages (`article_passages`; cut by the driver up to `DRIVER_CUT_ARTICLES`
   articles, so they reach the actors in even blocks, else by stateless tasks) → left join with the
   embedding cache `embeddings/<model key>/` by passage id → an actor pool that embeds only
   the passages the cache lacked (`PassageEmbedder`: one model per actor) → `passages/`
   (passages with their vectors, Parquet, replaced atomically).
2. The driver streams `passages/` and `articles/`, both sorted by list position, into the
   engine-neutral `index.build.build_snapshot`: the same snapshot format, written the same
   way as the local engine's, so serving cannot tell which engine built it.

Incremental like the local engine: the embedding cache is read (joined) before embedding (when it holds every
passage of a small corpus, the driver writes `passages/` itself and no actor starts), every
new vector is appended to it as a part file as soon as its batch is done (so a build killed
midway loses no finished embedding), and after a good build it is rewritten as exactly the
vectors of the indexed passages (the local cache's `keep_only`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cli.engines.datasets import ARTICLES, EMBEDDINGS, PASSAGES
from cli.engines.ray_index_progress import ProgressBars
from cli.engines.ray_reads import parquet_dataset
from cli.engines.ray_runtime import cluster_cpus, quiet_ray_data, ray_session
from cli.engines.ray_snapshot import ROWS_PER_SORT_BLOCK, CacheRewriter, index_batches, read_blocks
from cli.engines.ray_stages import PassageEmbedder, cut_passages, passages_with_vectors, vectors_of
from cli.engines.storage import Datasets
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
from ingest.errors import ConfigError, SourceError
from ingest.settings import Settings
from ingest.store import Store

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

logger = logging.getLogger(__name__)

# Articles per task of the passage stage: cutting is cheap, so few large tasks.
ARTICLES_PER_TASK = 256
# Articles the driver cuts into passages itself (one export part file, under a second); more are cut by Ray tasks.
DRIVER_CUT_ARTICLES = 1024
PROGRESS_INTERVAL_S = 0.25
# Tasks an actor holds at once: one. Ray Data hands blocks to whichever actors are up, and the first
# actor to load its model is up seconds before the others: with two per actor (as before) it took both
# blocks of a 900-passage build and embedded them one after the other while the second actor idled
# (bench/ray_embed.py: the phase ran at 34% of the model's rate per CPU). A block is one embedding
# batch (seconds of work on a CPU), so the gap before an actor's next block is small beside it.
TASKS_PER_ACTOR = 1
# The embedding stage starts once every actor has loaded its model (Ray Data's `wait_for_min_actors_s`),
# so the first blocks go to all of them; a cluster that cannot place them within this is refused.
ACTORS_START_TIMEOUT_S = 600
ACTORS_DID_NOT_START = (
    "the {actors} embedding actor(s) did not all start within {timeout} s (each loads the model on a Ray CPU "
    "share of {cpus:g}) — check `ray status` for free CPUs and memory, or lower LINKLENS_EMBED_ACTORS"
)
# The least Ray CPU share an embedding actor reserves (many actors on a small cluster).
MIN_ACTOR_CPUS = 0.1
# The Ray CPUs the read and passage tasks are guaranteed beside the actors (a Parquet read task takes one).
TASK_CPUS = 1.0
TOO_MANY_ACTORS = (
    "LINKLENS_EMBED_ACTORS={actors} needs at least {needed:g} Ray CPUs ({min_share:g} per actor and {tasks:g} for "
    "the passage tasks) but the cluster offers {total:g} — lower LINKLENS_EMBED_ACTORS or add CPUs"
)
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


def embedding_cache_name(key: str) -> str:
    """The dataset holding the embedding cache of one model key: `embeddings/<key as a folder name>`."""
    return f"{EMBEDDINGS}/{cache_folder_name(key)}"


def run_ray_index(
    cfg: Settings, rebuild: bool, quiet: bool = False, kind: str | None = None, timings: dict[str, float] | None = None,
    export: bool = True,
) -> dict[str, object]:
    """Build and publish a snapshot with Ray Data; returns the same report as the local `run_index`.

    When the data folder has a page store (a local crawl), it is exported to `articles/` first
    (unless `export` is False: `build` has its Ray crawl's export), so the index is always of what
    was crawled; otherwise `articles/` must already be there
    (written by `linklens crawl --engine ray`, possibly on a cluster). `timings`, when given,
    receives the seconds each phase took (bench/ray_embed.py): `start_s` (export, Ray start),
    `passages_s` (cutting and embedding into `passages/`), `snapshot_s`, `total_s`; and `encode_s`
    (time the actors spent in the model, summed), `encode_core_s` (the same times each actor's model
    threads), `threads_per_actor` (as the actors sized them on their nodes), `actor_start_s` (time the
    actors took to load the model, summed) and `cpus` (the cluster's).
    """
    started = time.perf_counter()
    timings = {} if timings is None else timings
    sources = None
    # The build lock covers the export too: another build (or a finishing Ray crawl) cannot swap
    # `articles/` while this build reads it.
    with snapshot.build_lock(cfg.snapshots_dir):
        datasets = Datasets.open(cfg)
        if cfg.store_path.exists():
            from cli.engines.store_export import export_articles

            if export:
                export_articles(cfg, datasets)
            with Store.open(cfg.store_path) as store:
                sources = list_sources(store)  # each list's URL and last crawl, for GET /lists as the local build
        if not datasets.exists(ARTICLES):
            raise SourceError(NO_ARTICLES.format(uri=datasets.uri(ARTICLES)))
        return _build_on_ray(cfg, rebuild, quiet, kind, timings, started, sources, datasets)


def _build_on_ray(cfg: Settings, rebuild: bool, quiet: bool, kind: str | None, timings: dict[str, float],
                  started: float, sources: dict[str, ListSource] | None, datasets: Datasets) -> dict[str, object]:
    """`run_ray_index` once `articles/` is in place, under the build lock."""
    ref = configured_model(cfg)
    embedder = Embedder(ref)
    ready_export = None if rebuild else existing_export(cfg.cache_dir, ref)
    profile = model_profile_of(ready_export, embedder).with_settings(cfg)
    counts = EmbedCounts()
    with ray_session(cfg, datasets) as ray, ProgressBars(quiet) as bars, ThreadPoolExecutor(max_workers=1) as side:
        # The snapshot needs the query encoder's ONNX export only at its end, and the driver waits while the actors
        # embed: export it meanwhile (seconds of torch and quantisation on a first build; at once when cached).
        encoder_dir = side.submit(query_encoder_dir, cfg.cache_dir, ref, embedder, rebuild)
        quiet_ray_data(ray)
        timings["start_s"] = time.perf_counter() - started
        logger.info("Ray ready at %.1fs", timings["start_s"])
        cache_name = embedding_cache_name(profile.cache_key(ref))
        counts_by_stage = _embed_passages(ray, cfg, datasets, ref, profile, cache_name, rebuild, bars)
        timings["encode_s"] = counts_by_stage.get("encode_ms", 0) / 1000
        timings["encode_core_s"] = counts_by_stage.get("encode_core_ms", 0) / 1000
        timings["actor_start_s"] = counts_by_stage.get("actor_start_ms", 0) / 1000
        timings["threads_per_actor"] = counts_by_stage.get("actor_threads", 0) / cfg.embed_actors
        timings["actors_embedding"] = counts_by_stage.get("actors_embedding", 0)
        timings["passages_s"] = time.perf_counter() - started - timings["start_s"]
        timings["cpus"] = cluster_cpus(ray)
        logger.info("passages embedded and written at %.1fs", time.perf_counter() - started)
        log_embedding_rates(counts_by_stage.get("embedded", 0), timings)
        cache = CacheRewriter(datasets, cache_name)
        try:
            report = build_snapshot(
                cfg, index_batches(ray, datasets, counts, bars, cache), ref.id, profile,
                encoder_dir.result, counts=counts, kind=kind,
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


def log_embedding_rates(embedded: int, timings: dict[str, float]) -> None:
    """How busy the embedding phase kept the cluster (bench/ray_crawl.py reads this line from -v output): passages
    per second per CPU over the whole phase against inside the model per core (`encode_core_s`: the actors' model
    seconds times their threads)."""
    if not embedded or not timings["encode_core_s"]:
        return
    phase = embedded / timings["passages_s"] / timings["cpus"]
    model = embedded / timings["encode_core_s"]
    logger.info("embedding phase: %d passages in %.1f s on %g CPUs: %.2f passages/s per CPU; in the model %.2f "
                "per core (%.0f%%)", embedded, timings["passages_s"], timings["cpus"], phase, model,
                100 * phase / model)


def _embedding_threads(ray: Any, actors: int) -> int:
    """Torch threads per embedding actor: the cluster's CPUs shared among the actors (each actor caps it at the
    CPUs of the node it runs on, `ray_stages.threads_on_this_node`).

    Actors reserve less than that (`cpu_plan`), but embedding is where the time goes, so
    each actor's torch uses its whole share of the cores.
    """
    return max(1, int(cluster_cpus(ray)) // actors)


def cpu_plan(total: float, actors: int, largest_node: float | None = None, whole_nodes: int = 1) -> float:
    """Ray CPUs each embedding actor reserves on a cluster of `total` CPUs: one, but always leaving one CPU to the
    read and passage tasks (Ray Data's file listing and Parquet read take a whole CPU each), since actors holding
    every CPU would wait forever for input that cannot be scheduled.

    That CPU must be free on one node, not in sum: two actors of half a CPU on two one-CPU nodes leave half a CPU
    on each, and the read waits forever. `largest_node` is the most CPUs one node offers (default: one node of
    `total`), `whole_nodes` how many nodes offer at least one CPU. With fewer actors than such nodes one is left
    to the tasks whatever Ray places where; otherwise the largest node keeps a CPU even if every actor lands on
    it. Where that leaves an actor nothing, an actor per node (a lone actor on a one-CPU Ray) reserves none and
    shares its node's CPU with the tasks; more actors than fit are refused in one sentence.
    """
    if actors < whole_nodes:
        return 1.0
    largest = total if largest_node is None else largest_node
    per_actor = min(1.0, (largest - TASK_CPUS) / actors)
    if per_actor >= MIN_ACTOR_CPUS:
        return per_actor
    if actors <= whole_nodes:
        return 0.0
    raise ConfigError(TOO_MANY_ACTORS.format(actors=actors, needed=actors * MIN_ACTOR_CPUS + TASK_CPUS,
                                             min_share=MIN_ACTOR_CPUS, tasks=TASK_CPUS, total=total))


def _embed_passages(ray: Any, cfg: Settings, datasets: Datasets, ref: ModelRef, profile: ModelProfile,
                    cache_name: str, rebuild: bool, bars: ProgressBars) -> dict[str, int]:  # fmt: skip
    """Phase 1: cut, join with the embedding cache, embed what is missing, write and publish `passages/`.

    Returns the stages' counts (`ray_progress.StageCounter`)."""
    nodes = node_cpus(ray)
    actor_cpus = cpu_plan(cluster_cpus(ray), cfg.embed_actors, max(nodes, default=0.0),
                          sum(1 for cpus in nodes if cpus >= TASK_CPUS))
    files = datasets.files(ARTICLES)
    total = datasets.rows_in(files)
    counter = bars.start(ray, total)
    cache_files = [] if rebuild else datasets.files(cache_name)
    options = {"words": cfg.passage_words, "overlap": cfg.passage_overlap_words, "headings": cfg.passage_headings,
               "progress": counter}
    version = datasets.new_version()
    if total <= DRIVER_CUT_ARTICLES:
        fresh, cached = _passages_on_the_driver(datasets, files, cache_files, options)
        if not fresh.num_rows and cached.num_rows:
            return _publish_cached_passages(datasets, cached, version, counter, bars)
        blocks, block_rows = embedding_blocks(fresh, cached, cfg.embed_actors, cfg.embed_batch_size)
        passages = ray.data.from_arrow(blocks)
    else:
        passages, block_rows = _passage_blocks_from_ray(ray, cfg, datasets, files, total, cache_files, options)
    with warnings.catch_warnings():
        # Ray 2.60 marks every way of passing actor options (here max_restarts) deprecated, ahead of its successor.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        embedded = _embedding_stage(ray, cfg, datasets, ref, profile, cache_name, passages, counter, actor_cpus,
                                    block_rows)
    embedded.context.wait_for_min_actors_s = ACTORS_START_TIMEOUT_S  # this dataset's own copy of Ray Data's context
    with ThreadPoolExecutor(max_workers=1) as pool:  # the pipeline runs while this thread draws progress
        written = pool.submit(embedded.write_parquet, datasets.path(PASSAGES, version), filesystem=datasets.fs)
        while not written.done():
            bars.poll()
            time.sleep(PROGRESS_INTERVAL_S)
        try:
            written.result()
        except ray.exceptions.GetTimeoutError as exc:
            raise ConfigError(ACTORS_DID_NOT_START.format(actors=cfg.embed_actors, timeout=ACTORS_START_TIMEOUT_S,
                                                          cpus=actor_cpus)) from exc
    counts = bars.poll()
    datasets.publish(PASSAGES, version)
    return counts


def _passages_on_the_driver(datasets: Datasets, files: list[str], cache_files: list[str],
                            options: dict[str, Any]) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """Up to `DRIVER_CUT_ARTICLES` articles: cut into passages here, with the cached vectors joined here; returns the
    passages to embed and those the cache holds (with their vectors).

    The same `cut_passages` the tasks run (~0.6 ms an article), without a read, cut or shuffle task to start
    (Ray Data's hash join starts its own actors). Counted here, the passages the cache lacks can be cut into even
    blocks, so every actor ends with the others (`embedding_blocks`), each handed to Ray as one actor task; and when
    the cache holds them all, no actor is needed (`_publish_cached_passages`). Not through `repartition`: the
    blocks it cuts from one input block reach the actor pool together, as one task for one actor. Nor through Ray's
    hash join: a `from_arrow` input joined by Ray, ahead of an actor holding a whole CPU, never finished on two
    one-CPU nodes (reproduced, even with two blocks), while the same join of a task's output did.
    """
    passages = cut_passages(datasets.dataset(files).to_table(), **options)
    if not cache_files:
        return passages, passages.slice(0, 0)
    passages = with_cached_vectors(passages, datasets.dataset(cache_files))
    return (passages.filter(passages.column("vector").is_null()),
            passages.filter(passages.column("vector").is_valid()))


def _publish_cached_passages(datasets: Datasets, cached: pa.Table, version: str, counter: Any,
                             bars: ProgressBars) -> dict[str, int]:  # fmt: skip
    """Every passage is in the embedding cache: `passages/` written from the driver, as the actors would have passed
    them through, without starting an actor (each loads the model: seconds of CPU, for nothing to embed)."""
    import numpy as np

    rows = passages_with_vectors(cached, vectors_of(cached.column("vector")), np.zeros(cached.num_rows, dtype=bool))
    datasets.create_dir(datasets.path(PASSAGES, version))
    datasets.write_table(datasets.path(PASSAGES, version, "part-0.parquet"), rows)
    counter.add.remote("cached", cached.num_rows)
    counts = bars.poll()
    datasets.publish(PASSAGES, version)
    return counts


def _passage_blocks_from_ray(ray: Any, cfg: Settings, datasets: Datasets, files: list[str], articles: int,
                             cache_files: list[str], options: dict[str, Any]) -> tuple[Any, int]:  # fmt: skip
    """More articles: read and cut by Ray tasks, left-joined with the embedding cache by Ray, streamed into the
    embedding stage in blocks of the batch size as they are cut; returns the dataset and the rows of a block."""
    articles_dataset = parquet_dataset(ray, datasets, files, read_blocks(articles, ARTICLES_PER_TASK))
    passages = articles_dataset.map_batches(cut_passages, batch_format="pyarrow", batch_size=ARTICLES_PER_TASK,
                                            fn_kwargs=options)
    if cache_files:
        rows = datasets.rows_in(cache_files)
        cached = parquet_dataset(ray, datasets, cache_files, read_blocks(rows, ROWS_PER_SORT_BLOCK), ["id", "vector"])
        passages = passages.join(cached, join_type="left_outer", num_partitions=_partitions(ray), on=("id",))
    # Ray Data reads a Parquet file as one block, and an actor takes a whole block as one task: 400 articles made one
    # block of 1,963 passages, so one actor embedded them all while the others idled (docs/scaling.md).
    return passages.repartition(target_num_rows_per_block=cfg.embed_batch_size), cfg.embed_batch_size


def with_cached_vectors(passages: pa.Table, cache: pads.Dataset) -> pa.Table:
    """`passages` with a `vector` column: each passage's vector from the embedding cache, null where it has none
    (the Ray path's left outer join, on the driver). The cache is scanned for these ids only; an id cached twice
    (parts appended by two killed runs) takes its first vector."""
    import pyarrow.compute as pc

    ids = passages.column("id")
    found = cache.to_table(columns=["id", "vector"], filter=pc.field("id").isin(ids.combine_chunks()))
    where = pc.index_in(ids, value_set=found.column("id").combine_chunks())
    return passages.append_column("vector", found.column("vector").take(where))


def embedding_blocks(fresh: pa.Table, cached: pa.Table, actors: int, batch_size: int) -> tuple[list[pa.Table], int]:
    """The blocks for the actor pool, one task each, and the most rows a block has (the stage's batch size).

    The passages to embed (`fresh`) are cut into even blocks (`embedding_block_rows`); the cached ones, which the
    actors only pass through, ride along in equal shares, so a block is one model call whatever the cache holds.
    In blocks of their own they would be split into batches of the fresh blocks' size: a rebuild with one changed
    passage would pass thousands of cached ones through one call each. With nothing to embed, the cached
    passages go in blocks of the batch size.
    """
    import pyarrow as pa

    if not fresh.num_rows:
        return table_slices(cached, batch_size), batch_size
    fresh_blocks = table_slices(fresh, embedding_block_rows(fresh.num_rows, actors, batch_size))
    cached_rows = -(-cached.num_rows // len(fresh_blocks))
    cached_blocks = table_slices(cached, cached_rows) if cached_rows else []
    blocks = [pa.concat_tables([block, *cached_blocks[i:i + 1]]) for i, block in enumerate(fresh_blocks)]
    return blocks, max(block.num_rows for block in blocks)


def table_slices(table: pa.Table, rows: int) -> list[pa.Table]:
    """`table` in consecutive slices of `rows` rows (the last one shorter); none for an empty table."""
    return [table.slice(start, rows) for start in range(0, table.num_rows, rows)]


def embedding_block_rows(passages: int, actors: int, batch_size: int) -> int:
    """Rows per embedding block: the batch size, or fewer so that `passages` make a multiple of `actors` blocks of
    equal size, and every actor ends with the others. In blocks of 512, an 877-passage build on 2 actors left one
    embedding the last 365 passages alone for ~10 s (bench/ray_crawl.py --build)."""
    blocks = -(-passages // batch_size)
    blocks = -(-blocks // actors) * actors
    return -(-passages // blocks)


def _embedding_stage(ray: Any, cfg: Settings, datasets: Datasets, ref: ModelRef, profile: ModelProfile,
                     cache_name: str, passages: Any, counter: Any, actor_cpus: float, block_rows: int) -> Any:
    """The actor pool that embeds what the cache lacked (`PassageEmbedder`), as a Ray Data stage.

    A task is one block of `block_rows` rows: a larger batch size would bundle blocks into one task, so two even
    blocks would go to one actor, one after the other."""
    gpus = cfg.embed_gpus if int(ray.cluster_resources().get("GPU", 0)) else 0
    return passages.map_batches(
        PassageEmbedder, batch_format="pyarrow", batch_size=block_rows,
        compute=ray.data.ActorPoolStrategy(size=cfg.embed_actors, max_tasks_in_flight_per_actor=TASKS_PER_ACTOR),
        num_cpus=actor_cpus, num_gpus=gpus or None,
        # A restarted actor could not get its constructor's arguments back (Ray logs an error line on every run
        # otherwise, ray-project/ray#53727); an actor that dies fails the run, and the rerun resumes from the cache.
        max_restarts=0,
        fn_constructor_kwargs={
            "model_id": ref.id, "location": ref.location, "passage_prefix": profile.passage_prefix,
            "datasets": datasets, "cache_name": cache_name, "threads": _embedding_threads(ray, cfg.embed_actors),
            "device": "cuda" if gpus else "cpu", "progress": counter,
        },
    )  # fmt: skip


def node_cpus(ray: Any) -> list[float]:
    """The CPUs each live node of the cluster offers Ray."""
    return [float(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def _partitions(ray: Any) -> int:
    return max(2, int(cluster_cpus(ray)))
