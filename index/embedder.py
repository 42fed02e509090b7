"""Passage embeddings on the build path, through sentence-transformers.

Why sentence-transformers here and not at query time: building embeds thousands
of passages in batches, where the seconds torch takes to load do not matter; a
query embeds one sentence, where they would dominate (see `query_encoder`). Both
paths compute the same vectors (a parity test pins this), which is also why a
build with only a few new passages embeds them with the ONNX export instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from index.model_ref import ModelProfile, ModelRef, model_prefixes
from ingest.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ENCODE_BATCH_SIZE = 32
# Up to this many new passages are embedded with the verified ONNX export instead:
# importing torch and loading the model costs more (5-10 s) than embedding them,
# and the two paths give the same vectors (cosine ≥ 0.9999, checked at export).
ONNX_EMBED_MAX_PASSAGES = 128
# Texts handed to one `encode` call between progress reports: large enough that
# sentence-transformers' own length sorting still groups similar lengths.
PROGRESS_STEP_TEXTS = 512
# Word pieces a BERT-style model reads when its config does not say (the position-embedding limit).
DEFAULT_MAX_SEQ_LENGTH = 512

Progress = Callable[[int, int], None]


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_sentence_model(ref: ModelRef, device: str = "cpu") -> SentenceTransformer:
    """Load the model (on CPU unless told: the Ray engine's GPU actors pass "cuda") with one torch thread per core.

    A model that cannot load is a ConfigError.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(core_count())
    try:
        model = SentenceTransformer(ref.location, device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the embedding model {ref.location!r} ({exc}) — set LINKLENS_MODEL to a local "
            "sentence-transformers folder, or unset it for the bundled all-MiniLM-L6-v2"
        ) from None
    model.eval()
    return model


def embedding_dimension(model: SentenceTransformer) -> int:
    """The model's vector size (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if not dim:
        raise ConfigError(f"the model {model!r} does not report its embedding size — use another model")
    return int(dim)


def model_profile(model: SentenceTransformer, ref: ModelRef) -> ModelProfile:
    """What the loaded model reads: vector size, word pieces (its `max_seq_length`) and prefixes."""
    query_prefix, passage_prefix = model_prefixes(ref.id, dict(getattr(model, "prompts", None) or {}))
    return ModelProfile(
        dimension=embedding_dimension(model),
        max_seq_length=int(model.max_seq_length or DEFAULT_MAX_SEQ_LENGTH),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
    )


class Embedder:
    """Turns passage texts into L2-normalised float32 vectors with one model."""

    def __init__(self, ref: ModelRef, model: SentenceTransformer | None = None, device: str = "cpu") -> None:
        self.ref = ref
        self._model = model
        self.device = device

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> SentenceTransformer:
        """Loaded on first use, so a build whose passages are all cached never loads torch."""
        if self._model is None:
            self._model = load_sentence_model(self.ref, self.device)
        return self._model

    @property
    def dimension(self) -> int:
        return embedding_dimension(self.model)

    @property
    def profile(self) -> ModelProfile:
        return model_profile(self.model, self.ref)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Embed `texts` in their order, longest-first in batches, reporting (done, total) as it goes.

        The texts are embedded as given: the caller puts the passage prefix in front
        (`prompt=""` keeps a model's default prompt from being added a second time).
        Sorting by length before cutting progress steps keeps every batch of similar
        length, so padding waste stays as low as in one big `encode` call.
        """

        def encode_step(batch: list[str]) -> np.ndarray:
            return self.model.encode(
                batch,
                prompt="",
                batch_size=ENCODE_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = _encode_sorted(texts, encode_step, PROGRESS_STEP_TEXTS, progress)
        logger.debug("embedded %d passages with %s", len(texts), self.ref.id)
        return out


def encode_with_onnx(folder: Path, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """Embed a few passages with the snapshot-ready ONNX export, on every core, without torch."""
    from index.query_encoder import OnnxQueryEncoder

    encoder = OnnxQueryEncoder(folder, threads=core_count())
    return _encode_sorted(texts, encoder.encode_batch, ENCODE_BATCH_SIZE, progress)


def _encode_sorted(
    texts: Sequence[str], encode_step: Callable[[list[str]], np.ndarray], step: int, progress: Progress | None
) -> np.ndarray:
    total = len(texts)
    order = sorted(range(total), key=lambda i: -len(texts[i]))
    out: np.ndarray | None = None
    if progress:
        progress(0, total)
    for start in range(0, total, step):
        rows = order[start : start + step]
        vectors = np.asarray(encode_step([texts[i] for i in rows]), dtype=np.float32)
        if out is None:
            out = np.empty((total, vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
        if progress:
            progress(min(start + step, total), total)
    assert out is not None
    return out
