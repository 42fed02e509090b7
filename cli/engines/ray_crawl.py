"""`--engine ray` for the crawl: the local crawler's stages as Ray Data operations.

    pending links ──(driver: grouped by host, packed into fetch units)──▶ from_items
      ──map_batches(fetch_unit)──▶ one task per unit: `ingest.link_batch.fetch_batch`, the local
                                   crawler's fetch machinery (gate, robots.txt, retries, deadlines,
                                   second try, archive fallback) over every link of its hosts
      ──map_batches(PageExtractor)──▶ actors, each with a warm `ExtractionPool` (the same pebble
                                   isolation and time and memory limits), running `extract_outcome`
      ──iter_batches──▶ driver: each outcome recorded in the page store as it streams in

Why the grouping is done by the driver and not by `Dataset.groupby`: `map_groups` calls its
function once per group, one after another inside a task, so hosts sharing a block would be
fetched in turn; here a unit holds several whole hosts and fetches them concurrently, like the
local crawler does. Every link of a host is in exactly one unit, but units share the hosts their links
lead to (redirect targets, robots.txt, the archive): every request of every unit is paced by the
cluster's host gates (cli/engines/ray_politeness.py).

The driver is the page store's one writer: a link is pending until its outcome is committed, so
a driver killed at any point leaves finished hosts finished and a rerun takes up only the rest.
Between the stages rows carry the link's `CrawlOutcome` pickled (one definition for both engines);
after the crawl the articles are written as Parquet (`articles/` under `Settings.datasets_location`)
for the index stage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
import queue
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ray

from cli.engines.ray_politeness import ClusterHostGate, gate_shards, start_host_gates
from cli.engines.ray_progress import StageBars, new_stage_counter
from cli.engines.ray_runtime import cluster_cpus, quiet_ray_data, ray_session
from cli.engines.storage import Datasets
from cli.engines.store_export import export_articles
from index import snapshot
from ingest.crawler import (
    CrawlSummary,
    crawl_summary,
    extract_outcome,
    extraction_pool,
    links_to_crawl,
    needs_extraction,
    private_origin_links,
    record_outcome,
)
from ingest.link_batch import FetchedBatch, HandedLink, fetch_batch
from ingest.models import CrawlOutcome, LinkState
from ingest.settings import Settings
from ingest.store import Store
from ingest.urls import host_of

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

# A fetch unit holds whole hosts, at most this many links (a host with more is a unit of its own).
MAX_LINKS_PER_FETCH_UNIT = 200
# Fetch units per CPU of the cluster, so every CPU has one to start while another waits on the network.
FETCH_UNITS_PER_CPU = 2
# Fetching waits on the network: a unit reserves this share of a CPU, so units and extraction share cores.
FETCH_UNIT_CPUS = 0.25
# A fetch unit passes on what it has settled this often, while it goes on fetching.
STREAM_EVERY_S = 1.0
# Pages handed to one extraction actor at a time.
EXTRACT_BATCH_PAGES = 8


def run_ray_crawl(cfg: Settings, store: Store, refresh: bool, retry_failed: bool, quiet: bool) -> CrawlSummary:
    """Crawl the store's pending links on Ray; the same summary as the local crawler's."""
    started = time.perf_counter()
    ids = links_to_crawl(store, refresh, retry_failed)
    tally = _Tally(started)
    datasets = Datasets.open(cfg)
    if ids:
        with ray_session(cfg, datasets) as ray, StageBars(len(ids), quiet) as bars:
            logger.info("ray ready after %.1f s", time.perf_counter() - started)
            quiet_ray_data(ray)
            counter = new_stage_counter(ray)
            gates = start_host_gates(ray, cfg.per_host_concurrency, cfg.per_host_delay_s,
                                     gate_shards(cluster_cpus(ray)))
            bars.follow(counter)
            _run_round(ray, cfg, store, ids, None, counter, gates, bars, tally)
            unsettled = [i for i, state in tally.last_state.items() if state is LinkState.PENDING]
            if unsettled and tally.answered_url is not None:
                # Links whose unit reached no host at all: tried again, told a URL that answered elsewhere.
                _run_round(ray, cfg, store, unsettled, tally.answered_url, counter, gates, bars, tally)
            tally.requests += ray.get(counter.read.remote()).get("robots_requests", 0)
    logger.info("crawl done after %.1f s", time.perf_counter() - started)
    # The index stage reads articles/ (cli/engines/datasets.py): exported under the build lock (waiting
    # for a running build to finish), so it is never swapped under a build that reads it.
    with snapshot.build_lock(cfg.snapshots_dir, wait=True):
        export_articles(cfg, datasets)
    return crawl_summary(store, len(ids), started, tally.requests,
                         Counter(state.value for state in tally.last_state.values()))


class _Tally:
    """The driver's bookkeeping of one crawl: requests made, each link's last state, a URL that answered."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_outcome_s: float | None = None
        self.requests = 0
        self.last_state: dict[int, LinkState] = {}
        self.answered_url: str | None = None

    def add(self, link_id: int, outcome: CrawlOutcome) -> None:
        self.requests += len(outcome.attempts)
        self.last_state[link_id] = outcome.state
        if self.answered_url is None:
            self.answered_url = next((a.url for a in outcome.attempts if a.status is not None), None)


def _run_round(ray: Any, cfg: Settings, store: Store, ids: list[int], answered_url: str | None, counter: Any,
               gates: list[Any], bars: StageBars, tally: _Tally) -> None:
    """One pass of the pipeline over `ids`; outcomes recorded in the store as batches stream in."""
    total = cluster_cpus(ray)
    private = private_origin_links(store, cfg)
    units = fetch_units([_handed(store, i, i in private) for i in ids], max(1, int(total)))
    with warnings.catch_warnings():
        # Ray 2.60 marks every way of passing actor options (here max_restarts) deprecated, ahead of its successor.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        dataset = _pipeline(ray, cfg, units, answered_url, counter, gates, total)
    logger.info("round of %d links in %d fetch units (answered_url=%s)", len(ids), len(units), answered_url)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        if tally.first_outcome_s is None:
            tally.first_outcome_s = time.perf_counter() - tally.started
            logger.info("first outcome after %.1f s", tally.first_outcome_s)
        for link_id, blob in zip(batch.column("link_id").to_pylist(), batch.column("outcome").to_pylist(),
                                 strict=True):
            recorded = record_outcome(store, link_id, pickle.loads(blob))
            tally.add(link_id, recorded)
            bars.stored(recorded.state.value)


def extraction_plan(total: float) -> tuple[int, float]:
    """Extraction actors at most, and Ray CPUs each, on a cluster of `total` CPUs: every actor up still leaves one
    fetch unit its share (actors holding every CPU would wait forever for pages no task can fetch)."""
    actors = max(1, int(total))
    return actors, min(1.0, (total - FETCH_UNIT_CPUS) / actors)


def _pipeline(ray: Any, cfg: Settings, units: list[list[HandedLink]], answered_url: str | None, counter: Any,
              gates: list[Any], total: float) -> Any:
    """The Ray Data plan: fetch units as tasks, extraction on a pool of actors; nothing runs until iterated."""
    actors, actor_cpus = extraction_plan(total)
    return (
        ray.data.from_items([{"links": pickle.dumps(unit)} for unit in units], override_num_blocks=len(units))
        .map_batches(fetch_unit, batch_size=1, batch_format="pyarrow", num_cpus=FETCH_UNIT_CPUS,
                     fn_kwargs={"settings": cfg, "answered_url": answered_url, "counter": counter, "gates": gates})
        .map_batches(PageExtractor, batch_size=EXTRACT_BATCH_PAGES, batch_format="pyarrow", num_cpus=actor_cpus,
                     compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                     fn_constructor_kwargs={"settings": cfg, "counter": counter},
                     # The pebble pool inside survives what a page does; an actor that dies anyway fails the
                     # run, and the rerun resumes (Ray warns that restarting one with these arguments may fail).
                     ray_remote_args_fn=_not_restarted)
    )


def _not_restarted() -> dict[str, Any]:
    return {"max_restarts": 0}


def _handed(store: Store, link_id: int, private_origin: bool = False) -> HandedLink:
    row = store.link(link_id)
    return HandedLink(id=link_id, url=row["url"], title=row["title"], etag=row["etag"],
                      last_modified=row["last_modified"], final_url=row["final_url"],
                      kept=store.kept_text_date(link_id), private_origin=private_origin)


def fetch_units(links: list[HandedLink], cpus: int) -> list[list[HandedLink]]:
    """`links` grouped by host, the groups packed (in list order) into units of whole hosts.

    A unit holds at most `MAX_LINKS_PER_FETCH_UNIT` links, fewer on a small crawl so that every
    CPU gets `FETCH_UNITS_PER_CPU` units; a host with more links than that is a unit of its own.
    """
    by_host: dict[str, list[HandedLink]] = {}
    for link in links:
        by_host.setdefault(host_of(link.url), []).append(link)
    size = min(MAX_LINKS_PER_FETCH_UNIT, max(1, math.ceil(len(links) / (FETCH_UNITS_PER_CPU * cpus))))
    units: list[list[HandedLink]] = []
    current: list[HandedLink] = []
    for group in by_host.values():
        if current and len(current) + len(group) > size:
            units.append(current)
            current = []
        current.extend(group)
    if current:
        units.append(current)
    return units


def _outcome_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("link_id", pa.int64()), ("title", pa.string()), ("extract", pa.bool_()),
                      ("outcome", pa.binary())])


def fetch_unit(batch: pa.Table, settings: Settings, answered_url: str | None, counter: Any,
               gates: list[Any]) -> Iterator[pa.Table]:
    """Ray task: fetch one unit's links as the crawler does (no extraction); one row per link's outcome.

    Every request it makes waits for its host's slot from the cluster's host `gates`.

    Outcomes are passed on while the unit is still fetching (every `STREAM_EVERY_S`), so extraction
    and the driver's store start on the first pages, and a driver killed midway loses little.
    """
    import pyarrow as pa

    (blob,) = batch.column("links").to_pylist()
    links: list[HandedLink] = pickle.loads(blob)
    titles = {link.id: link.title for link in links}
    settled: queue.SimpleQueue[tuple[int, CrawlOutcome] | FetchedBatch | BaseException] = queue.SimpleQueue()

    def fetch() -> None:
        try:
            gate = ClusterHostGate(gates, settings.per_host_concurrency, settings.per_host_delay_s)
            settled.put(fetch_batch(settings, links, answered_url, on_outcome=lambda i, o: settled.put((i, o)),
                                    gate=gate))
        except BaseException as exc:  # noqa: BLE001 - raised again in the task below, never lost with the thread
            settled.put(exc)

    threading.Thread(target=fetch, name="linklens-fetch-unit", daemon=True).start()
    rows: list[dict[str, Any]] = []
    attempts = 0
    last_sent = time.monotonic()
    while True:
        item = settled.get()
        if isinstance(item, BaseException):
            raise item
        done = isinstance(item, FetchedBatch)
        if isinstance(item, tuple):
            link_id, outcome = item
            attempts += len(outcome.attempts)
            rows.append({"link_id": link_id, "title": titles[link_id], "extract": needs_extraction(outcome),
                         "outcome": pickle.dumps(outcome)})
        if rows and (done or time.monotonic() - last_sent >= STREAM_EVERY_S):
            counter.add.remote("fetch", len(rows))
            yield pa.Table.from_pylist(rows, schema=_outcome_schema())
            rows, last_sent = [], time.monotonic()
        if isinstance(item, FetchedBatch):
            # robots.txt requests belong to no link: counted apart, before the driver can read the count
            ray.get(counter.add.remote("robots_requests", item.requests - attempts))
            return


class PageExtractor:
    """Ray actor: extraction with the local crawler's isolated pool, started once per actor and kept warm."""

    def __init__(self, settings: Settings, counter: Any) -> None:
        self._pool = extraction_pool(settings.model_copy(update={"extract_workers": 1}))
        self._counter = counter

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        rows = batch.to_pylist()
        todo = [row for row in rows if row["extract"]]
        if todo:
            asyncio.run(self._extract(todo))
            self._counter.add.remote("extract", len(todo))
        return pa.Table.from_pylist(rows, schema=_outcome_schema())

    async def _extract(self, rows: list[dict[str, Any]]) -> None:
        async def one(row: dict[str, Any]) -> None:
            outcome: CrawlOutcome = pickle.loads(row["outcome"])
            await extract_outcome(self._pool, outcome, row["title"], row["link_id"])
            row["outcome"] = pickle.dumps(outcome)

        await asyncio.gather(*(one(row) for row in rows))
