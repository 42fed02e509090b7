"""Query embeddings without torch: the exported ONNX encoder run by onnxruntime.

Why: loading torch and sentence-transformers takes seconds and hundreds of MB,
which would dominate a one-shot `linklens search` and every server start. The
build exports the same network (transformer, mean pooling, L2 norm) to ONNX;
here only onnxruntime, `tokenizers` and numpy are imported. If a snapshot has no
ONNX encoder (a model that could not be exported), the sentence-transformers
path is used instead, loaded lazily, with a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ingest.errors import SnapshotMismatchError

logger = logging.getLogger(__name__)

ENCODER_FILE = "query_encoder.onnx"
ENCODER_WEIGHTS_FILE = "query_encoder.weights"
# The same network with 8-bit weights (`onnx_export.add_int8`), beside the float one in every export.
INT8_ENCODER_FILE = "query_encoder.int8.onnx"
INT8_WEIGHTS_FILE = "query_encoder.int8.weights"
PRECISIONS = {"float": ENCODER_FILE, "int8": INT8_ENCODER_FILE}
TOKENIZER_FILE = "tokenizer.json"
ENCODER_CONFIG_FILE = "query_encoder.json"
# One query per call: a single intra-op thread is fastest per query and lets the
# server run as many queries in parallel as there are cores. It also means the session owns no
# thread pool, so `serve --workers N` can fork workers that keep it (serve/prefork.py).
SESSION_THREADS = 1


@dataclass(frozen=True)
class EncoderConfig:
    """What the query side must know about the exported network (written next to it)."""

    model: str
    dimension: int
    max_seq_length: int
    inputs: list[str]
    parity_min_cosine: float
    # What the model expects in front of texts (see `index.model_ref.ModelProfile`), so a build
    # that finds everything cached knows them without loading the model.
    query_prefix: str = ""
    passage_prefix: str = ""

    def save(self, folder: Path) -> None:
        (folder / ENCODER_CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> EncoderConfig:
        return cls(**json.loads((folder / ENCODER_CONFIG_FILE).read_text(encoding="utf-8")))


class QueryEncoder(Protocol):
    dimension: int

    def encode(self, text: str) -> np.ndarray: ...

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray: ...


class OnnxQueryEncoder:
    """The exported encoder: `encode(text)` gives one L2-normalised float32 vector."""

    def __init__(self, folder: Path, threads: int = SESSION_THREADS, file: str = ENCODER_FILE) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = EncoderConfig.load(folder)
        self.dimension = self.config.dimension
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # tokenizer.json files often carry the training setup (pad to 128); a single
        # query needs no padding, and a batch pads to its longest text.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.config.max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = SESSION_THREADS
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.file = file
        self._session = ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]

    def encode(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        mask = np.asarray([encoding.attention_mask], dtype=np.int64)
        return self._run(ids, mask)[0]

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = e.attention_mask
        return self._run(ids, mask)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (vectors,) = self._session.run(None, {name: feed[name] for name in self._inputs})
        return np.ascontiguousarray(vectors, dtype=np.float32)


class SentenceTransformerQueryEncoder:
    """Fallback for models that could not be exported: the build path's model, loaded on first query."""

    def __init__(self, location: str, dimension: int) -> None:
        self._location = location
        self.dimension = dimension
        self._model = None

    def _loaded(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self._location, device="cpu")
        return self._model

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        # prompt="": prefixes are put in front by the caller, never again by a model's default prompt.
        vectors = self._loaded().encode(list(texts), prompt="", normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


class PrefixedQueryEncoder:
    """Puts the model's query prefix (from the snapshot's manifest) in front of every query it encodes."""

    def __init__(self, inner: QueryEncoder, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.dimension = inner.dimension

    def encode(self, text: str) -> np.ndarray:
        return self.inner.encode(self.prefix + text)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_batch([self.prefix + t for t in texts])


def encoder_file(folder: Path, precision: str) -> str | None:
    """The snapshot's ONNX encoder file for `precision` ("int8" or "float"), else the float one, else None.

    A snapshot built before 8-bit encoders existed holds only the float one: it is
    used (`open_query_encoder` logs it), and the next build adds the 8-bit one.
    """
    for file in (PRECISIONS[precision], ENCODER_FILE):
        if (folder / file).exists():
            return file
    return None


def open_query_encoder(folder: Path, model_location: str, dimension: int, precision: str = "float") -> QueryEncoder:
    """The snapshot's ONNX encoder (of `precision` when it has one) if any, else the torch fallback (logged)."""
    file = encoder_file(folder, precision)
    if file is not None:
        if file != PRECISIONS[precision]:
            logger.info("snapshot %s has no %s query encoder; using %s (a rebuild adds it)", folder, precision, file)
        encoder = OnnxQueryEncoder(folder, file=file)
        if encoder.dimension != dimension:
            raise SnapshotMismatchError(
                f"the query encoder in {folder} gives {encoder.dimension}-d vectors but the index holds "
                f"{dimension}-d ones — rebuild it: linklens index --rebuild"
            )
        return encoder
    logger.warning(
        "snapshot %s has no ONNX query encoder; queries use sentence-transformers (slower start, needs torch)", folder
    )
    return SentenceTransformerQueryEncoder(model_location, dimension)
