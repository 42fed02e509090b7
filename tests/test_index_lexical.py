"""BM25: our numpy loader and scorer agree with bm25s itself, and the analyzer stems and drops stopwords."""

from __future__ import annotations

from pathlib import Path

import bm25s
import bm25s.stopwords
import numpy as np

from index.lexical import LexicalIndex, terms
from index.stopwords import STOPWORDS_EN_PLUS

TEXTS = [
    "Consistent hashing maps keys and cache servers onto one ring.",
    "Sharding a database by tenant creates hot shards under skewed traffic.",
    "A cache stampede happens when a hot key expires and requests pile up.",
    "Raft elects a leader with randomized election timeouts.",
    "",
]


def test_the_analyzer_stems_lowercases_and_drops_stopwords() -> None:
    assert terms("How are the Caches Sharded?") == ["cach", "shard"]
    assert terms("a of the") == []
    assert terms("P99 x2 CQRS") == ["p99", "x2", "cqrs"]


def test_the_copied_stopword_list_is_bm25s_list() -> None:
    assert tuple(bm25s.stopwords.STOPWORDS_EN_PLUS) == STOPWORDS_EN_PLUS


def test_saved_and_loaded_scores_equal_bm25s_scores(tmp_path: Path) -> None:
    built, retriever = LexicalIndex.build(TEXTS)
    retriever.save(str(tmp_path), show_progress=False)
    loaded = LexicalIndex.load(tmp_path, len(TEXTS))
    reference = bm25s.BM25.load(str(tmp_path), show_progress=False)
    for query in ("cache hot key", "leader election", "sharding tenants", "unknownword"):
        q = terms(query)
        ours = loaded.scores(q)
        assert np.allclose(ours, built.scores(q))
        known = [t for t in q if t in reference.vocab_dict]
        expected = reference.get_scores(known) if known else np.zeros(len(TEXTS))
        assert np.allclose(ours, expected, atol=1e-6), query


def test_top_returns_positive_hits_best_first_within_the_mask() -> None:
    index, _ = LexicalIndex.build(TEXTS)
    rows, scores = index.top(terms("hot cache key"), n=10)
    assert list(rows) == [2, 0, 1]  # all three terms, then "cache" and "key", then "hot" alone
    assert np.all(scores > 0) and list(scores) == sorted(scores, reverse=True)
    mask = np.array([True, True, False, True, True])
    masked_rows, _ = index.top(terms("hot cache key"), n=10, allowed=mask)
    assert 2 not in masked_rows and len(masked_rows) > 0
    assert index.top(terms("the"), n=10)[0].size == 0
