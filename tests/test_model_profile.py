"""Prefixes, vector size and length limit come from the model, are recorded, and are used on both paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index import snapshot, vectors
from index.build import build_index
from index.model_ref import ModelProfile, ModelRef, model_prefixes
from index.passages import article_passages
from index.query_encoder import OnnxQueryEncoder, encoder_file
from index.search import Searcher
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.fixtures.relevance import slug_urls
from tests.index_fixtures import BuiltIndex, fill_store

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, seeded_settings


@pytest.mark.parametrize(
    ("model_id", "prompts", "expected"),
    [
        ("all-MiniLM-L6-v2", {"query": "", "document": ""}, ("", "")),
        ("some/model", {"query": "q: ", "passage": "p: "}, ("q: ", "p: ")),
        ("some/model", {"query": "q: ", "document": "d: ", "passage": "p: "}, ("q: ", "d: ")),
        ("intfloat/e5-small-v2", {}, ("query: ", "passage: ")),
        ("/models/multilingual-e5-base/", {}, ("query: ", "passage: ")),
        ("BAAI/bge-base-en-v1.5", {"query": None}, ("Represent this sentence for searching relevant passages: ", "")),
        ("thenlper/gte-small", {}, ("", "")),
        ("intfloat/e5-small-v2", {"query": "Q: "}, ("Q: ", "")),  # the model's own prompts win over the table
    ],
)
def test_prefixes_come_from_the_prompts_else_from_the_model_family(
    model_id: str, prompts: dict[str, str | None], expected: tuple[str, str]
) -> None:
    assert model_prefixes(model_id, prompts) == expected


def test_settings_override_the_models_prefixes_and_name_the_cache() -> None:
    e5 = ModelProfile(384, 512, "query: ", "passage: ")
    assert e5.with_settings(load_settings()) == e5
    overridden = e5.with_settings(load_settings(query_prefix="", passage_prefix="doc: "))
    assert (overridden.query_prefix, overridden.passage_prefix) == ("", "doc: ")
    ref = ModelRef("intfloat/e5-small-v2", "intfloat/e5-small-v2")
    assert ModelProfile(384, 512).cache_key(ref) == ref.id  # no prefix: the key every cache already uses
    assert e5.cache_key(ref) != overridden.cache_key(ref) != ref.id


def test_the_bundled_model_is_recorded_without_prefixes_and_with_its_length(built: BuiltIndex) -> None:
    manifest = json.loads(
        (snapshot.current_folder(built.settings.snapshots_dir, built.settings.data_dir) / "manifest.json").read_text()
    )
    assert (manifest["dimension"], manifest["max_seq_length"]) == (384, 256)
    assert (manifest["query_prefix"], manifest["passage_prefix"]) == ("", "")


def test_prefixes_are_used_by_the_build_and_by_the_query_encoder(seeded_settings: Settings, built: BuiltIndex) -> None:
    settings = seeded_settings.model_copy(update={"query_prefix": "find: ", "passage_prefix": "text: "})
    urls = slug_urls()
    with Store.open(settings.store_path) as store:
        ids = fill_store(store)
        keep = {ids[urls["cache-stampede"]], ids[urls["raft-leader-election"]]}
        store._conn.execute(f"DELETE FROM links WHERE id NOT IN ({','.join(map(str, keep))})")
        articles = list(store.articles())
        report = build_index(settings, store, embedder=built.embedder)
    assert (report.embedded, report.cached) == (report.passages, 0)  # prefixed vectors are other vectors

    folder = snapshot.current_folder(settings.snapshots_dir, settings.data_dir)
    manifest = snapshot.Manifest.load(folder)
    assert (manifest.query_prefix, manifest.passage_prefix, manifest.max_seq_length) == ("find: ", "text: ", 256)
    texts = [p.indexed_text for a in articles for p in article_passages(a)]
    stored = vectors.read_rows(folder / snapshot.VECTORS_FILE, 0, len(texts))
    prefixed = built.embedder.encode(["text: " + t for t in texts])
    plain = built.embedder.encode(texts)
    assert np.min(np.sum(stored * prefixed, axis=1)) > 0.9999
    assert np.min(np.sum(stored * plain, axis=1)) < 0.999  # the prefix really changed what was embedded

    searcher = Searcher.open(settings)
    raw = OnnxQueryEncoder(folder, file=encoder_file(folder, settings.query_precision))  # the precision it serves
    query = "when a hot key expires"
    assert np.allclose(searcher._loaded.encoder.encode(query), raw.encode("find: " + query), atol=1e-6)
    assert not np.allclose(searcher._loaded.encoder.encode(query), raw.encode(query), atol=1e-3)
    assert searcher.search(query, k=1).results[0].url == urls["cache-stampede"]
