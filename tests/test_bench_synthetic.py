"""The scale benchmark's data is the size its label says (issue 18).

`bench/synthetic.py` writes its corpus in batches; when each batch was synced as the
whole list, every batch removed the one before and a "100k" benchmark measured 10k.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.synthetic import SyntheticCorpus, base_passages, fill_data_dir, snapshot_of_size
from index.build import build_index
from index.model_ref import configured_model
from ingest.settings import Settings
from ingest.store import Store
from tests.index_fixtures import built, seeded_settings  # noqa: F401  (fixtures)

BATCH = 12
BATCHES = 3
DIMENSION = 384  # the bundled model's: the build checks cached vectors against it


def unit_vectors(texts: list[str]) -> np.ndarray:
    """Deterministic unit vectors: this test checks counts and plumbing, never relevance."""
    rng = np.random.default_rng(len(texts))
    vectors = rng.normal(size=(len(texts), DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.slow
def test_a_corpus_written_in_batches_is_stored_and_indexed_whole(seeded_settings: Settings,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    model_id = configured_model(seeded_settings).id
    base = base_passages(tmp_path / "base", unit_vectors, model_id)
    corpus = SyntheticCorpus(base, passages=BATCH * BATCHES * 5)
    assert corpus.article_count == BATCH * BATCHES
    passages = fill_data_dir(seeded_settings.data_dir, corpus, model_id, lambda _: None, batch=BATCH)

    with Store.open(seeded_settings.store_path) as store:
        states = [row["state"] for row in store.link_rows()]
        assert len(states) == corpus.article_count
        assert set(states) == {"ok"}, "a batch removed the batches before it"
        report = build_index(seeded_settings, store)
    assert report.passages == passages
    assert report.embedded == 0, "every passage vector should come from the prepared cache"

    figures = snapshot_of_size(seeded_settings.data_dir, passages)
    assert figures["passages"] == passages and figures["articles"] == corpus.article_count
    with pytest.raises(SystemExit, match=f"holds {passages} passages, not ~{passages * 10}"):
        snapshot_of_size(seeded_settings.data_dir, passages * 10)
