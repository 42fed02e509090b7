"""`linklens index --engine ray` against the local engine, on a real local Ray (2 CPUs) and the real model.

One Ray session for the module. The page store is the fixture articles (`fill_store`), so
the judged fixture queries apply; caches are seeded from the session build, so the local
engine embeds nothing, while the Ray engine (whose Parquet embedding cache starts empty)
embeds every passage in its actors: the vectors compared come from two separate runs.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.engines import ray_index, ray_snapshot
from cli.engines.datasets import ARTICLES, PASSAGES, article_from_row
from cli.engines.ray_index import embedding_cache_name, run_ray_index
from cli.engines.ray_stages import embedding_table
from cli.engines.storage import Datasets
from cli.engines.store_export import export_articles
from cli.index_commands import run_index
from cli.main import app
from index import snapshot
from index.model_ref import BUNDLED_MODEL_ID
from index.search import Searcher
from ingest.errors import ConfigError
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.fixtures.relevance import judged_queries
from tests.index_fixtures import BuiltIndex, fill_store, seed_caches
from tests.ray_fixtures import ray_address

pytest_plugins = ["tests.index_fixtures", "tests.ray_fixtures"]  # the session index: built

REPO = Path(__file__).resolve().parents[1]
VECTOR_TOLERANCE = 1e-5
TOP_K = 10
KILL_BATCH_SIZE = 4
MIDWAY_TIMEOUT_S = 180.0


@dataclass
class Built:
    """What one engine's snapshot holds: passage ids in order, vectors, and top-10 URLs per judged query."""

    report: dict[str, object]
    passage_ids: list[str]
    vectors: np.ndarray
    top: dict[str, list[str]]


def read_snapshot(settings: Settings, report: dict[str, object]) -> Built:
    folder = settings.snapshots_dir / str(report["snapshot_id"])
    conn = sqlite3.connect(folder / "meta.sqlite3")
    ids = [row[0] for row in conn.execute("SELECT id FROM passages ORDER BY row")]
    conn.close()
    vectors = np.array(np.load(folder / snapshot.VECTORS_FILE, mmap_mode="r"))
    searcher = Searcher.open(settings)
    assert searcher.snapshot_id == report["snapshot_id"]
    top = {q.query: [r.url for r in searcher.search(q.query, k=TOP_K).results] for q in judged_queries()}
    searcher.close()
    return Built(report, ids, vectors, top)


def fresh_settings(built: BuiltIndex, folder: Path, **overrides: object) -> Settings:
    """A data folder with the fixture store and the session's caches (the SQLite ones the local engine reads)."""
    settings = load_settings(data_dir=folder, keep_snapshots=3, embed_batch_size=16, **overrides)
    seed_caches(built.settings, settings)
    with Store.open(settings.store_path) as store:
        fill_store(store)
    return settings


@pytest.fixture(scope="module")
def engines(ray_cluster: Any, built: BuiltIndex, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same store indexed by the local engine, then by the Ray engine, in one data folder."""
    settings = fresh_settings(built, tmp_path_factory.mktemp("engines"))
    local = read_snapshot(settings, run_index(settings, rebuild=False, quiet=True))
    ray = read_snapshot(settings, run_ray_index(settings, rebuild=False, quiet=True))
    return {"settings": settings, "local": local, "ray": ray}


def test_ray_and_local_index_the_same_passages_vectors_and_rankings(engines: dict[str, Any]) -> None:
    local, ray = engines["local"], engines["ray"]
    assert ray.report["snapshot_id"] != local.report["snapshot_id"]
    assert set(ray.report) == set(local.report)  # the same report shape
    for key in ("articles", "documents", "passages", "model", "index_kind", "query_encoder"):
        assert ray.report[key] == local.report[key], key
    assert ray.report["embedded"] == ray.report["passages"] and ray.report["cached"] == 0
    assert ray.passage_ids == local.passage_ids  # same passages, same order
    assert ray.vectors.shape == local.vectors.shape
    assert float(np.abs(ray.vectors - local.vectors).max()) < VECTOR_TOLERANCE
    for query, urls in local.top.items():
        assert len(urls) == TOP_K
        assert ray.top[query] == urls, query


def test_rebuild_ignores_the_embedding_cache_and_keeps_every_actor_busy(engines: dict[str, Any]) -> None:
    # Two actors, and every passage fits one embedding batch: the driver counts the passages and cuts them into two
    # even blocks. In one block of the batch size, one actor would embed everything while the other idled; with
    # two blocks, Ray Data used to hand both to the actor that loaded its model first.
    passages = int(engines["ray"].report["passages"])
    settings: Settings = engines["settings"].model_copy(update={"embed_actors": 2, "embed_batch_size": passages})
    timings: dict[str, float] = {}
    rebuilt = run_ray_index(settings, rebuild=True, quiet=True, timings=timings)
    assert rebuilt["embedded"] == rebuilt["passages"] == passages and rebuilt["cached"] == 0
    assert rebuilt["snapshot_id"] != engines["ray"].report["snapshot_id"]
    assert timings["actors_embedding"] == 2


def test_a_build_with_every_passage_cached_starts_no_embedding_actor(engines: dict[str, Any]) -> None:
    settings: Settings = engines["settings"]
    timings: dict[str, float] = {}
    again = read_snapshot(settings, run_ray_index(settings, rebuild=False, quiet=True, timings=timings))
    ray = engines["ray"]
    assert again.report["cached"] == again.report["passages"] == ray.report["passages"]
    assert again.report["embedded"] == 0
    assert timings["actor_start_s"] == 0 and timings["actors_embedding"] == 0  # no actor loaded the model
    assert again.passage_ids == ray.passage_ids
    assert float(np.abs(again.vectors - ray.vectors).max()) < VECTOR_TOLERANCE
    assert again.top == ray.top


def test_a_corpus_too_large_for_the_driver_is_cut_and_sorted_by_ray_into_the_same_snapshot(
        engines: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(ray_snapshot, "DRIVER_SORT_ROWS", {PASSAGES: 0, ARTICLES: 0})  # every sort goes to Ray
    monkeypatch.setattr(ray_index, "DRIVER_CUT_ARTICLES", 0)  # and every article is read and cut by Ray tasks
    settings: Settings = engines["settings"]
    by_ray = read_snapshot(settings, run_ray_index(settings, rebuild=False, quiet=True))
    local = engines["local"]
    assert by_ray.passage_ids == local.passage_ids
    assert float(np.abs(by_ray.vectors - local.vectors).max()) < VECTOR_TOLERANCE
    assert by_ray.top == local.top


@pytest.mark.parametrize(("passages", "actors", "batch_size", "rows"), [
    (877, 2, 512, 439),  # the benchmark's build: two even blocks, not 512 + 365
    (1963, 2, 512, 491),  # four blocks of at most the batch size, two for each actor
    (100, 3, 512, 34),  # fewer passages than a batch: one block per actor
    (5000, 4, 512, 417),  # ten blocks of the batch size would leave two actors a third block: twelve
])
def test_embedding_blocks_are_cut_evenly_among_the_actors(passages: int, actors: int, batch_size: int,
                                                          rows: int) -> None:
    assert ray_index.embedding_block_rows(passages, actors, batch_size) == rows
    assert -(-passages // rows) % actors == 0 and rows <= batch_size


@pytest.mark.parametrize(("fresh", "cached", "actors", "sizes", "rows"), [
    (877, 0, 2, [439, 438], 439),  # nothing cached: even blocks of the passages to embed
    (1, 4000, 1, [4001], 4001),  # one changed passage: one call, not 4,000 pass-through calls
    (877, 100, 2, [489, 488], 489),  # the cached ones shared evenly among the even blocks
    (0, 1100, 2, [512, 512, 76], 512),  # nothing to embed: blocks of the batch size
])
def test_embedding_blocks_are_one_call_each_and_carry_the_cached_passages_along(
        fresh: int, cached: int, actors: int, sizes: list[int], rows: int) -> None:  # fmt: skip
    def table(n: int, start: int) -> pa.Table:
        return pa.table({"id": [f"p{i}" for i in range(start, start + n)]})

    blocks, batch = ray_index.embedding_blocks(table(fresh, 0), table(cached, fresh), actors, 512)
    assert [b.num_rows for b in blocks] == sizes and batch == rows
    ids = sorted(i for b in blocks for i in b.column("id").to_pylist())
    assert ids == sorted(f"p{i}" for i in range(fresh + cached))  # every passage, once


def test_the_driver_joins_each_passage_with_its_first_cached_vector(tmp_path: Path) -> None:
    parts = [tmp_path / "part-1.parquet", tmp_path / "part-2.parquet"]
    pq.write_table(embedding_table(["a", "b"], np.array([[1, 1], [2, 2]], np.float32)), parts[0])
    pq.write_table(embedding_table(["b"], np.array([[3, 3]], np.float32)), parts[1])  # b again, from a later run
    passages = pa.table({"id": ["c", "b", "a"], "text": ["new", "cached twice", "cached"]})
    joined = ray_index.with_cached_vectors(passages, pads.dataset([str(p) for p in parts]))
    assert joined.column("id").to_pylist() == ["c", "b", "a"]  # one row per passage, in order
    assert joined.column("vector").to_pylist() == [None, [2.0, 2.0], [1.0, 1.0]]


def test_embedding_actors_the_cluster_cannot_place_are_refused_in_one_sentence(
        engines: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(ray_index, "ACTORS_START_TIMEOUT_S", 1)
    monkeypatch.setattr(ray_index, "cpu_plan", lambda *args: 64.0)  # more CPUs per actor than the cluster has
    with pytest.raises(ConfigError, match="embedding actor.* did not all start within 1 s"):
        run_ray_index(engines["settings"], rebuild=True, quiet=True)


def test_export_writes_every_article_in_list_order(built: BuiltIndex, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "export")
    with Store.open(settings.store_path) as store:
        fill_store(store)
        expected = list(store.articles())
    report = export_articles(settings)
    datasets = Datasets.open(settings)
    table = datasets.dataset(datasets.files(ARTICLES)).to_table()
    assert report.articles == table.num_rows == len(expected)
    assert table.column("position").to_pylist() == list(range(len(expected)))
    assert [article_from_row(r) for r in table.to_pylist()] == expected
    assert sorted(p.name for p in Path(settings.datasets_location).iterdir()) == [ARTICLES]  # no leftovers


def test_ray_index_without_articles_says_what_to_run(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["index", "--engine", "ray"])
    assert result.exit_code == 1, result.output
    assert "linklens crawl LIST --engine ray" in result.output and "Traceback" not in result.output
    assert ARTICLES in result.output


def cached_ids(settings: Settings) -> set[str]:
    datasets = Datasets.open(settings)
    parts = datasets.files(embedding_cache_name(BUNDLED_MODEL_ID))
    if not parts:
        return set()
    return set(pads.dataset(parts, filesystem=datasets.fs, format="parquet").to_table(columns=["id"])
               .column("id").to_pylist())


def test_a_killed_ray_build_resumes_without_re_embedding_what_it_embedded(
    ray_cluster: Any, built: BuiltIndex, tmp_path: Path
) -> None:
    kill_midway_and_resume(fresh_settings(built, tmp_path / "killed"), ray_address(ray_cluster), {})


def kill_midway_and_resume(settings: Settings, address: str, extra_env: dict[str, str]) -> None:
    """SIGKILL an `index --engine ray` driver (joined to the Ray at `address`, `extra_env` set) once it has embedded
    two batches; the rerun reuses every vector the cache holds, and leaves the cache compacted."""
    good = run_index(settings, rebuild=False, quiet=True)["snapshot_id"]
    env = {**os.environ, "LINKLENS_DATA_DIR": str(settings.data_dir), "LINKLENS_EMBED_BATCH_SIZE": str(KILL_BATCH_SIZE),
           "LINKLENS_RAY_ADDRESS": address, **extra_env}  # fmt: skip
    command = [sys.executable, "-m", "cli.main", "index", "--engine", "ray", "--json"]
    build = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + MIDWAY_TIMEOUT_S
        while len(cached_ids(settings)) < 2 * KILL_BATCH_SIZE:
            assert build.poll() is None, build.stderr.read().decode() if build.stderr else ""
            assert time.monotonic() < deadline, "the Ray build never embedded a batch"
            time.sleep(0.05)
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=30)
    assert build.returncode == -signal.SIGKILL
    before = cached_ids(settings)
    assert snapshot.current_id(settings.snapshots_dir) == good  # CURRENT stayed on the last good snapshot
    assert Datasets.open(settings).version(PASSAGES) is None  # killed before the passages were published

    resumed = run_ray_index(settings, rebuild=False, quiet=True)
    ids = read_snapshot(settings, resumed).passage_ids
    assert 0 < len(before) < len(ids)
    assert resumed["cached"] == sum(1 for i in ids if i in before)
    assert resumed["embedded"] == sum(1 for i in ids if i not in before)
    assert snapshot.current_id(settings.snapshots_dir) == resumed["snapshot_id"]
    assert cached_ids(settings) == set(ids)  # the cache was rewritten: exactly the indexed passages' vectors
    cache = Datasets.open(settings)
    assert len(cache.files(embedding_cache_name(BUNDLED_MODEL_ID))) == 1  # one rewritten file, no loose parts left
