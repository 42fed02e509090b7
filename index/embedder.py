"""Passage embeddings on the build path, through sentence-transformers.

Why sentence-transformers here and not at query time: building embeds thousands
of passages in batches, where torch is fast and the load time does not matter;
a query embeds one sentence, where loading torch would cost more than the whole
search (see `query_encoder`). Both paths compute the same vectors (a parity test
pins this).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ingest.errors import ConfigError
from index.model_ref import ModelRef

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ENCODE_BATCH_SIZE = 32
# Texts handed to one `encode` call between progress reports: large enough that
# sentence-transformers' own length sorting still groups similar lengths.
PROGRESS_STEP_TEXTS = 512

Progress = Callable[[int, int], None]


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_sentence_model(ref: ModelRef) -> SentenceTransformer:
    """Load the model on CPU with one torch thread per core; a model that cannot load is a ConfigError."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(core_count())
    try:
        model = SentenceTransformer(ref.location, device="cpu")
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


class Embedder:
    """Turns passage texts into L2-normalised float32 vectors with one model."""

    def __init__(self, ref: ModelRef, model: SentenceTransformer | None = None) -> None:
        self.ref = ref
        self._model = model

    @property
    def model(self) -> SentenceTransformer:
        """Loaded on first use, so a build whose passages are all cached never loads torch."""
        if self._model is None:
            self._model = load_sentence_model(self.ref)
        return self._model

    @property
    def dimension(self) -> int:
        return embedding_dimension(self.model)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Embed `texts` in their order, longest-first in batches, reporting (done, total) as it goes.

        Sorting by length before cutting progress steps keeps every batch of similar
        length, so padding waste stays as low as in one big `encode` call.
        """
        total = len(texts)
        if total == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = sorted(range(total), key=lambda i: -len(texts[i]))
        out = np.empty((total, self.dimension), dtype=np.float32)
        done = 0
        if progress:
            progress(0, total)
        for start in range(0, total, PROGRESS_STEP_TEXTS):
            rows = order[start : start + PROGRESS_STEP_TEXTS]
            vectors = self.model.encode(
                [texts[i] for i in rows],
                batch_size=ENCODE_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[rows] = vectors.astype(np.float32, copy=False)
            done += len(rows)
            if progress:
                progress(done, total)
        logger.debug("embedded %d passages with %s", total, self.ref.id)
        return out
