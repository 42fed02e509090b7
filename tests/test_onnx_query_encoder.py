"""The torch-free query path: parity with sentence-transformers, no torch imported, and the fallback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense

from index import snapshot
from index.model_ref import ModelRef
from index.onnx_export import export
from index.query_encoder import OnnxQueryEncoder, SentenceTransformerQueryEncoder, open_query_encoder
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
