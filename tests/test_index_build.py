"""Building snapshots: manifest, files, incremental embedding, atomic switch, pruning, load errors."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import numpy as np
import pytest

from index import snapshot
from index.build import build_index
from index.embedding_cache import EmbeddingCache
from index.model_ref import configured_model
from index.onnx_export import export_dir
from index.passages import article_passages
from index.search import Searcher
from ingest.errors import NotBuiltError, SnapshotMismatchError, SourceError
from ingest.models import Document
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.fixtures.relevance import fixture_articles, slug_urls
from tests.index_fixtures import BuiltIndex, fill_store

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, searcher, seeded_settings

FIXTURE_LINKS = len(fixture_articles()) + 2  # plus a dead and a never-crawled link


def current_folder(settings: Settings):  # type: ignore[no-untyped-def]
    return settings.snapshots_dir / snapshot.current_id(settings.snapshots_dir)


def test_the_build_report_counts_what_was_indexed(built: BuiltIndex) -> None:
    report = built.report
    assert report.articles == FIXTURE_LINKS
    assert report.documents == len(fixture_articles())
    assert report.passages > report.articles  # title cards + body passages
    assert report.embedded + report.cached == report.passages
    assert (report.model, report.index_kind, report.query_encoder) == ("all-MiniLM-L6-v2", "flat", "onnx")


def test_the_manifest_describes_the_snapshot(built: BuiltIndex) -> None:
    folder = current_folder(built.settings)
    manifest = json.loads((folder / snapshot.MANIFEST_FILE).read_text())
    assert manifest["snapshot_id"] == folder.name == built.report.snapshot_id
    assert manifest["model"] == "all-MiniLM-L6-v2"
    assert manifest["dimension"] == 384
    assert manifest["passages"] == built.report.passages
    assert manifest["articles"] == FIXTURE_LINKS
    assert manifest["index_kind"] == "flat"
    assert manifest["query_encoder"] == "onnx"
    assert folder.name.endswith(manifest["corpus_hash"][:8])
    assert manifest["built_at"].endswith("Z") and manifest["build_seconds"] > 0
    assert {"linklens", "faiss-cpu", "bm25s", "onnxruntime", "torch", "sentence-transformers"} <= set(
        manifest["versions"]
    )
    assert (manifest["passage_words"], manifest["passage_overlap_words"]) == (180, 30)
    assert manifest["index"]["kind"] == "flat" and 0 < manifest["index"]["exact_filter_max_share"] < 1


def test_the_snapshot_holds_indexes_metadata_and_the_query_encoder(built: BuiltIndex) -> None:
    folder = current_folder(built.settings)
    for name in (
        "vectors.npy",
        "meta.sqlite3",
        "columns/row_article.npy",
        "columns/facets.json",
        "query_encoder.onnx",
        "query_encoder.weights",
        "tokenizer.json",
        "query_encoder.json",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "bm25" / "vocab.index.json").is_file()
    assert not (folder / "ann.faiss").exists()  # the flat kind scans vectors.npy
    assert np.load(folder / "vectors.npy", mmap_mode="r").shape == (built.report.passages, 384)
    exported = export_dir(built.settings.cache_dir, configured_model(built.settings)) / "query_encoder.onnx"
    assert os.stat(exported).st_ino == os.stat(folder / "query_encoder.onnx").st_ino  # hard link, not a copy
    with sqlite3.connect(folder / "meta.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0] == built.report.passages
        url = slug_urls()["consistent-hashing"]
        sections, state = conn.execute("SELECT sections, state FROM articles WHERE url=?", (url,)).fetchone()
        assert json.loads(sections) == [["Scalability", "Sharding"], ["Performance", "Caching"]]
        assert state == "ok"
        rows = conn.execute("SELECT row, ordinal FROM passages ORDER BY row").fetchall()
        assert [r[0] for r in rows] == list(range(len(rows)))


def test_a_rebuild_embeds_only_the_changed_document(seeded_settings: Settings, built: BuiltIndex) -> None:
    with Store.open(seeded_settings.store_path) as store:
        ids = fill_store(store)
        first = build_index(seeded_settings, store)
        assert (first.embedded, first.cached) == (0, first.passages)  # the session's cache covers everything

        url = slug_urls()["cache-stampede"]
        old = {p.id for a in store.articles() for p in article_passages(a)}
        doc = store.document(ids[url])
        assert doc is not None
        store.replace_document(ids[url], Document(**{**doc.__dict__, "text": doc.text + " Also, add jitter to TTLs."}))
        changed = next(a for a in store.articles() if a.url == url)
        new_ids = {p.id for p in article_passages(changed)} - old

        second = build_index(seeded_settings, store, embedder=built.embedder)  # the session's loaded model
    assert 0 < second.embedded == len(new_ids) < len(article_passages(changed))
    assert second.cached == second.passages - second.embedded
    assert second.snapshot_id != first.snapshot_id
    with EmbeddingCache.open(seeded_settings.cache_dir / "embeddings.sqlite3") as cache:
        assert cache.count("all-MiniLM-L6-v2") == len(
            {p.id for a in store_articles(seeded_settings) for p in article_passages(a)}
        )


def store_articles(settings: Settings):  # type: ignore[no-untyped-def]
    with Store.open(settings.store_path) as store:
        return list(store.articles())


def test_with_nothing_fetched_the_index_holds_title_cards(seeded_settings: Settings, built: BuiltIndex) -> None:
    calls: list[tuple[int, int]] = []
    with Store.open(seeded_settings.store_path) as store:
        fill_store(store, with_documents=False)
        report = build_index(
            seeded_settings, store, progress=lambda done, total: calls.append((done, total)), embedder=built.embedder
        )
    assert report.documents == 0
    assert report.passages == report.articles == FIXTURE_LINKS
    assert calls[-1] == (report.articles, report.articles) and report.embedded > 0
    searcher = Searcher.open(seeded_settings)
    top = searcher.search("Raft elections and logs", k=3).results[0]
    assert top.url == slug_urls()["raft-leader-election"]


def test_an_empty_store_cannot_be_built(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path)
    with Store.open(settings.store_path) as store, pytest.raises(SourceError, match="linklens crawl"):
        build_index(settings, store)


def test_current_switches_atomically_and_old_snapshots_are_pruned(seeded_settings: Settings) -> None:
    assert seeded_settings.keep_snapshots == 2
    with Store.open(seeded_settings.store_path) as store:
        fill_store(store)
        reports = [build_index(seeded_settings, store) for _ in range(3)]
    ids = [r.snapshot_id for r in reports]
    assert len(set(ids)) == 3
    assert snapshot.current_id(seeded_settings.snapshots_dir) == ids[-1]
    assert (seeded_settings.snapshots_dir / "CURRENT").read_text() == ids[-1] + "\n"
    assert snapshot.list_ids(seeded_settings.snapshots_dir) == ids[1:]
    assert reports[-1].pruned == [ids[0]]
    leftovers = [p.name for p in seeded_settings.snapshots_dir.iterdir() if p.name.startswith(snapshot.TEMP_PREFIX)]
    assert leftovers == []


def test_pruning_never_deletes_the_current_snapshot(seeded_settings: Settings) -> None:
    with Store.open(seeded_settings.store_path) as store:
        fill_store(store)
        ids = [build_index(seeded_settings, store).snapshot_id for _ in range(2)]
    snapshot.set_current(seeded_settings.snapshots_dir, ids[0])  # e.g. rolled back by hand
    assert snapshot.prune(seeded_settings.snapshots_dir, keep=1) == []
    assert snapshot.list_ids(seeded_settings.snapshots_dir) == ids


def test_a_searcher_reloads_when_current_changes_and_keeps_serving(seeded_settings: Settings) -> None:
    with Store.open(seeded_settings.store_path) as store:
        fill_store(store)
        first = build_index(seeded_settings, store)
        searcher = Searcher.open(seeded_settings)
        assert searcher.reload_if_changed() is False
        second = build_index(seeded_settings, store)
    errors: list[Exception] = []
    stop = threading.Event()

    def keep_searching() -> None:
        while not stop.is_set():
            try:
                assert searcher.search("retry storms", k=3).results
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    worker = threading.Thread(target=keep_searching)
    worker.start()
    try:
        assert searcher.snapshot_id == first.snapshot_id
        assert searcher.reload_if_changed() is True
        assert searcher.snapshot_id == second.snapshot_id
        assert searcher.reload_if_changed() is False
    finally:
        stop.set()
        worker.join()
    assert errors == []


def test_no_snapshot_means_not_built(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(NotBuiltError) as err:
        Searcher.open(settings)
    assert str(err.value) == f"no index in {tmp_path} yet — run: linklens build"


def test_a_snapshot_of_another_model_is_refused_with_advice(built: BuiltIndex) -> None:
    other = load_settings(data_dir=built.settings.data_dir, model="/models/e5-small")
    with pytest.raises(SnapshotMismatchError) as err:
        Searcher.open(other)
    message = str(err.value)
    for expected in ("'all-MiniLM-L6-v2'", "'/models/e5-small'", "linklens index --rebuild", "LINKLENS_MODEL"):
        assert expected in message, message


def test_a_failed_build_leaves_the_current_snapshot_untouched(
    seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(seeded_settings.store_path) as store:
        fill_store(store)
        good = build_index(seeded_settings, store)

        def disk_full(*args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("index.bm25_build.StreamingBM25.finish", disk_full)
        with pytest.raises(OSError, match="No space left"):
            build_index(seeded_settings, store)
    assert snapshot.current_id(seeded_settings.snapshots_dir) == good.snapshot_id
    assert snapshot.list_ids(seeded_settings.snapshots_dir) == [good.snapshot_id]
    assert [p.name for p in seeded_settings.snapshots_dir.iterdir() if p.name.startswith(snapshot.TEMP_PREFIX)] == []
    assert Searcher.open(seeded_settings).snapshot_id == good.snapshot_id


def test_rebuild_ignores_the_caches(seeded_settings: Settings, built: BuiltIndex) -> None:
    urls = slug_urls()
    with Store.open(seeded_settings.store_path) as store:
        ids = fill_store(store)
        keep = {ids[urls["cache-stampede"]], ids[urls["raft-leader-election"]]}
        store._conn.execute(f"DELETE FROM links WHERE id NOT IN ({','.join(map(str, keep))})")
        report = build_index(seeded_settings, store, rebuild=True, embedder=built.embedder)
    assert report.articles == 2
    assert (report.embedded, report.cached) == (report.passages, 0)
    assert report.query_encoder == "onnx"
