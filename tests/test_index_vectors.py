"""Both dense index kinds pass the same search contract; the kind is chosen by size or by setting."""

from __future__ import annotations

import numpy as np
import pytest

from index import vectors
from index.build import build_index
from index.search import Searcher
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.fixtures.relevance import slug_urls
from tests.index_fixtures import BuiltIndex, fill_store, seed_caches

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, searcher, seeded_settings

CONTRACT_QUERIES = {
    "how do services agree on a single leader": "raft-leader-election",
    "throttle each client to N calls per second but tolerate short bursts": "token-bucket-rate-limiting",
    "ORM loop firing a separate query for each row": "n-plus-one-queries",
}


def test_the_kind_follows_the_setting_then_the_threshold() -> None:
    assert vectors.choose_kind(10, "hnsw", 1000) == "hnsw"
    assert vectors.choose_kind(10**6, "flat", 1000) == "flat"
    assert vectors.choose_kind(1000, "auto", 1000) == "flat"
    assert vectors.choose_kind(1001, "auto", 1000) == "hnsw"


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_contract_for_each_index_kind(kind: str, built: BuiltIndex, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = load_settings(data_dir=tmp_path, index_kind=kind)
    seed_caches(built.settings, settings)
    with Store.open(settings.store_path) as store:
        fill_store(store)
        report = build_index(settings, store)
    assert report.index_kind == kind and report.embedded == 0
    searcher = Searcher.open(settings)
    assert searcher.stats()["index_kind"] == kind
    urls = slug_urls()
    for query, slug in CONTRACT_QUERIES.items():
        assert searcher.search(query, k=3, mode="dense").results[0].url == urls[slug], (kind, query)
    filtered = searcher.search("leader", k=5, mode="dense", section="Stability").results
    assert filtered and all(r.section.startswith("Stability") for r in filtered)
    similar = searcher.similar(searcher.search("raft", k=1).results[0].article_id, k=3)
    assert len(similar.results) == 3


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_raw_index_returns_exact_neighbours_on_small_data(kind: str) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(500, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = vectors.build(data, kind, threads=2)
    rows, scores = vectors.search(index, data[17], 5)
    assert rows[0] == 17 and scores[0] == pytest.approx(1.0, abs=1e-5)
    allowed = np.arange(0, 500, 2)
    rows, _ = vectors.search(index, data[17], 5, allowed)
    assert len(rows) == 5 and all(r % 2 == 0 for r in rows)
    assert np.allclose(vectors.vectors_of(index, np.array([3, 4])), data[3:5], atol=1e-6)
