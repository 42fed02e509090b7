"""The torch-free query path: parity with sentence-transformers, no torch imported, and the fallback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense

from index import snapshot
from index.model_ref import ModelRef
from index.onnx_export import add_int8, export, export_dir
from index.query_encoder import (
    ENCODER_FILE,
    ENCODER_WEIGHTS_FILE,
    INT8_ENCODER_FILE,
    INT8_WEIGHTS_FILE,
    PRECISIONS,
    OnnxQueryEncoder,
    SentenceTransformerQueryEncoder,
    open_query_encoder,
)
from index.search import Searcher
from ingest.settings import DEFAULT_QUERY_PRECISION
from tests.fixtures.relevance import judged_queries
from tests.index_fixtures import BuiltIndex

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, searcher, seeded_settings

REPO = Path(__file__).resolve().parents[1]
# Not the texts the export checked itself on.
SAMPLES = [
    "replication lag",
    "Why does my read-after-write return stale data from a follower?",
    "p99 latency, hedged requests & tail-at-scale (Dean, 2013)",
    "Kafka consumer group rebalances every few minutes; offsets are committed after processing.",
    "Ceci n'est pas une requête en anglais, mais elle doit marcher aussi.",
    "word " * 400,
]
FORBIDDEN = ("torch", "sentence_transformers", "transformers")
# How close the 8-bit encoder's query vectors must stay to the float encoder's on real questions
# (measured on the fixture questions: median 0.994; over the fair set's 170 questions min 0.982).
INT8_FLOOR_MIN_COSINE = 0.97
INT8_FLOOR_MEDIAN_COSINE = 0.99


def snapshot_folder(built: BuiltIndex) -> Path:
    return built.settings.snapshots_dir / snapshot.current_id(built.settings.snapshots_dir)


def test_onnx_vectors_match_sentence_transformers(built: BuiltIndex) -> None:
    reference = built.embedder.model.encode(SAMPLES, normalize_embeddings=True, convert_to_numpy=True)
    encoder = OnnxQueryEncoder(snapshot_folder(built))
    one_by_one = np.stack([encoder.encode(text) for text in SAMPLES])
    batched = encoder.encode_batch(SAMPLES)
    assert one_by_one.dtype == np.float32 and one_by_one.shape == (len(SAMPLES), 384)
    assert np.allclose(np.linalg.norm(one_by_one, axis=1), 1.0, atol=1e-5)
    assert (reference * one_by_one).sum(axis=1).min() >= 0.9999
    assert (reference * batched).sum(axis=1).min() >= 0.9999


def test_searching_never_imports_torch(built: BuiltIndex) -> None:
    script = (
        "import json, sys\n"
        "from ingest.settings import load_settings\n"
        "import index.search\n"
        "searcher = index.search.Searcher.open(load_settings())\n"
        "hits = searcher.search('how do services agree on a single leader', k=3).to_dict()['results']\n"
        "searcher.similar(searcher.search('caching').results[0].article_id)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(json.dumps({'loaded': loaded, 'top': hits[0]['url']}))\n"
    )
    env = {**os.environ, "LINKLENS_DATA_DIR": str(built.settings.data_dir)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["top"].endswith("/raft-leader-election")


def test_a_snapshot_without_an_onnx_encoder_falls_back_with_a_warning(
    built: BuiltIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="index.query_encoder"):
        encoder = open_query_encoder(tmp_path, str(built.embedder.ref.location), 384)
    assert isinstance(encoder, SentenceTransformerQueryEncoder)
    assert "no ONNX query encoder" in caplog.text
    onnx = OnnxQueryEncoder(snapshot_folder(built)).encode(SAMPLES[1])
    assert float(encoder.encode(SAMPLES[1]) @ onnx) >= 0.9999


def test_a_model_with_extra_layers_is_not_exported(built: BuiltIndex, tmp_path: Path) -> None:
    base = built.embedder.model
    dense = Dense(in_features=384, out_features=64)
    odd = SentenceTransformer(modules=[base[0], base[1], dense], device="cpu")
    reason = export(odd, ModelRef("odd", "odd"), tmp_path)
    assert reason is not None and "Dense" in reason
    assert not (tmp_path / "query_encoder.onnx").exists()


def test_the_8bit_encoder_stays_close_to_the_float_one_on_real_questions(built: BuiltIndex) -> None:
    folder = snapshot_folder(built)
    questions = [q.query for q in judged_queries()]
    floats = OnnxQueryEncoder(folder).encode_batch(questions)
    quantised = OnnxQueryEncoder(folder, file=INT8_ENCODER_FILE)
    int8 = np.stack([quantised.encode(q) for q in questions])
    cosines = (floats * int8).sum(axis=1)
    assert cosines.min() >= INT8_FLOOR_MIN_COSINE, questions[int(cosines.argmin())]
    assert np.median(cosines) >= INT8_FLOOR_MEDIAN_COSINE
    assert cosines.max() < 0.99999  # really another network, not a copy of the float one
    assert (folder / INT8_WEIGHTS_FILE).stat().st_size * 3 < (folder / ENCODER_WEIGHTS_FILE).stat().st_size


def test_searches_use_the_encoder_the_setting_names(
    built: BuiltIndex, searcher: Searcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert built.settings.query_precision == DEFAULT_QUERY_PRECISION
    assert searcher.stats()["query_encoder_file"] == PRECISIONS[DEFAULT_QUERY_PRECISION]
    int8_settings = built.settings.model_copy(update={"query_precision": "int8"})
    quantised = Searcher.open(int8_settings)
    floating = Searcher.open(built.settings.model_copy(update={"query_precision": "float"}))
    try:
        assert quantised.stats()["query_encoder_file"] == INT8_ENCODER_FILE
        assert floating.stats()["query_encoder_file"] == ENCODER_FILE
        question = "how do services agree on a single leader"
        assert [r.url for r in floating.search(question, k=3).results][:1] == [
            r.url for r in quantised.search(question, k=3).results
        ][:1]
    finally:
        quantised.close()
        floating.close()
    # A snapshot built before the 8-bit encoder existed: the float one, said once in the log.
    older = tmp_path / "older"
    shutil.copytree(snapshot_folder(built), older, copy_function=os.link)
    for name in (INT8_ENCODER_FILE, INT8_WEIGHTS_FILE):
        (older / name).unlink()
    with caplog.at_level(logging.INFO, logger="index.query_encoder"):
        old = Searcher.open(int8_settings, folder=older)
    try:
        assert old.stats()["query_encoder_file"] == ENCODER_FILE
        assert "no int8 query encoder" in caplog.text
    finally:
        old.close()


def test_the_8bit_encoder_is_reproducible_and_made_once(built: BuiltIndex, tmp_path: Path) -> None:
    cached = export_dir(built.settings.cache_dir, built.embedder.ref)
    assert (cached / INT8_ENCODER_FILE).exists()
    # An export from before the 8-bit encoder: the float files only; quantised again from them alone.
    older = tmp_path / cached.name
    older.mkdir()
    for item in cached.iterdir():
        if not item.name.startswith("query_encoder.int8"):
            shutil.copy2(item, older / item.name)
    add_int8(older)
    for name in (INT8_ENCODER_FILE, INT8_WEIGHTS_FILE):
        assert (older / name).read_bytes() == (cached / name).read_bytes(), name
    made = (older / INT8_WEIGHTS_FILE).stat().st_ino
    add_int8(older)
    assert (older / INT8_WEIGHTS_FILE).stat().st_ino == made
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached.name]  # no work folder left behind
