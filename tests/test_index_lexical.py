"""BM25: the streaming builder gives bm25s' scores, our memory-mapped loader reads them, the analyzer is right."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import bm25s
import bm25s.stopwords
import numpy as np
import pytest

from index.bm25_build import StreamingBM25
from index.lexical import LexicalIndex, terms
from index.stopwords import STOPWORDS_EN_PLUS
from index.vocabulary import IDS_FILE, MAX_TERM_BYTES, TERMS_FILE, SortedVocabulary, bounded, keep_term

TEXTS = [
    "Consistent hashing maps keys and cache servers onto one ring.",
    "Sharding a database by tenant creates hot shards under skewed traffic.",
    "A cache stampede happens when a hot key expires and requests pile up.",
    "Raft elects a leader with randomized election timeouts.",
    "",
    "Cache, cache, cache: a hot cache key cached in every cache server of the ring.",
]
QUERIES = ("cache hot key", "leader election", "sharding tenants", "unknownword", "ring servers")


def is_mapped(array: np.ndarray) -> bool:
    """True when the array's memory is a file mapping (shared by every process that maps the file)."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return isinstance(base, mmap.mmap)


def streamed(folder: Path, texts: list[str], batch: int) -> LexicalIndex:
    builder = StreamingBM25(folder)
    for start in range(0, len(texts), batch):
        builder.add(texts[start : start + batch])
    builder.finish()
    return LexicalIndex.load(folder, len(texts))


def test_the_analyzer_stems_lowercases_and_drops_stopwords() -> None:
    assert terms("How are the Caches Sharded?") == ["cach", "shard"]
    assert terms("a of the") == []
    assert terms("P99 x2 CQRS") == ["p99", "x2", "cqrs"]


def test_the_copied_stopword_list_is_bm25s_list() -> None:
    assert tuple(bm25s.stopwords.STOPWORDS_EN_PLUS) == STOPWORDS_EN_PLUS


@pytest.mark.parametrize("batch", [1, 2, len(TEXTS)])
def test_streamed_scores_equal_bm25s_scores_whatever_the_batches(tmp_path: Path, batch: int) -> None:
    ours = streamed(tmp_path / "bm25", TEXTS, batch)
    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index([terms(t) for t in TEXTS], show_progress=False)
    for query in QUERIES:
        q = terms(query)
        known = [t for t in q if t in reference.vocab_dict]
        expected = reference.get_scores(known) if known else np.zeros(len(TEXTS))
        assert np.allclose(ours.scores(q), expected, atol=1e-6), query
    assert not (tmp_path / "bm25" / ".postings.spill").exists()


def test_the_folder_is_bm25s_format_and_memory_mapped(tmp_path: Path) -> None:
    ours = streamed(tmp_path / "bm25", TEXTS, 2)
    assert is_mapped(ours._data) and is_mapped(ours._indices)
    loaded_by_bm25s = bm25s.BM25.load(str(tmp_path / "bm25"))
    for query in QUERIES:
        known = [t for t in terms(query) if t in loaded_by_bm25s.vocab_dict]
        if known:
            assert np.allclose(loaded_by_bm25s.get_scores(known), ours.scores(terms(query)), atol=1e-6)
    assert json.loads((tmp_path / "bm25" / "params.index.json").read_text())["num_docs"] == len(TEXTS)


def test_top_returns_positive_hits_best_first_within_the_mask(tmp_path: Path) -> None:
    index = streamed(tmp_path / "bm25", TEXTS, 3)
    rows, scores = index.top(terms("hot cache key"), n=10)
    # all three terms many times, then all three once, then "cache" and "key", then "hot" alone
    assert list(rows) == [5, 2, 0, 1]
    assert np.all(scores > 0) and list(scores) == sorted(scores, reverse=True)
    mask = np.array([True, True, False, True, True, False])
    masked_rows, _ = index.top(terms("hot cache key"), n=10, allowed=mask)
    assert set(masked_rows.tolist()) == {0, 1}
    assert index.top(terms("the"), n=10)[0].size == 0


def test_compiled_top_equals_the_head_of_the_full_ranking(tmp_path: Path) -> None:
    """`top` (compiled) must return exactly the head of `scores()`' ranking (numpy): rows, float32 scores, ties.

    Repeated passages tie exactly, so the cut falls inside runs of equal scores and
    row order must decide; repeated query terms count twice; masks of every width.
    """
    rng = np.random.default_rng(5)
    common = ["system", "data", "service", "request"]
    rare = [f"rare{i}" for i in range(40)]
    texts = [
        " ".join(rng.choice(common, 12).tolist() + rng.choice(rare, int(rng.integers(0, 3))).tolist())
        for _ in range(2500)
    ]
    texts += texts[:500]  # exact duplicates: equal scores
    index = streamed(tmp_path / "bm25", texts, 700)
    masks = [None, rng.random(len(texts)) < 0.3, rng.random(len(texts)) < 0.01, np.zeros(len(texts), dtype=bool)]
    queries = ("rare3 system", "rare7 rare7 data service", "system data", "rare11 rare12 request", "rare39",
               "data data data", "unknownword system")  # fmt: skip
    for query in queries:
        q = terms(query)
        for allowed in masks:
            scores = index.scores(q)
            if allowed is not None:
                scores = np.where(allowed, scores, 0.0)
            hits = np.flatnonzero(scores > 0)
            ranked = hits[np.lexsort((hits, -scores[hits]))]
            for n in (1, 10, 50, len(texts)):
                rows, values = index.top(q, n, allowed)
                assert rows.tolist() == ranked[:n].tolist(), (query, n)
                assert values.dtype == np.float32 and np.array_equal(values, scores[ranked[:n]].astype(np.float32))
    assert len(index.top(terms("system"), 50)[0]) == 50 and np.unique(index.top(terms("system"), 50)[1]).size < 50


def test_the_vocabulary_is_a_sorted_mapped_table_that_finds_every_term(tmp_path: Path) -> None:
    texts = [*TEXTS, "Zürich Straße naïve café résumé", "x" * 10 + " shard"]
    ours = streamed(tmp_path / "bm25", texts, 3)
    vocab = ours._vocab
    assert isinstance(vocab, SortedVocabulary)
    assert is_mapped(vocab._terms) and is_mapped(vocab._ids)
    stored = vocab._terms.tolist()
    assert stored == sorted(stored)
    from_json = json.loads((tmp_path / "bm25" / "vocab.index.json").read_text(encoding="utf-8"))
    del from_json[""]  # bm25s' empty token: never a query term
    assert len(vocab) == len(from_json)
    assert all(vocab.get(term) == column for term, column in from_json.items())
    assert vocab.get("notaword") is None and vocab.get("") is None and vocab.get("y" * 500) is None
    for query in ("zürich café", "straße", "shard cache"):
        assert np.array_equal(ours.scores(terms(query)),
                              LexicalIndex(ours._data, ours._indices, ours._indptr, from_json, len(texts))
                              .scores(terms(query)))  # fmt: skip


def test_a_snapshot_with_only_the_json_vocabulary_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    fresh = streamed(folder, TEXTS, 2)
    (folder / TERMS_FILE).unlink()
    (folder / IDS_FILE).unlink()
    old = LexicalIndex.load(folder, len(TEXTS))
    assert isinstance(old._vocab, dict)
    for query in QUERIES:
        assert np.array_equal(old.scores(terms(query)), fresh.scores(terms(query))), query


def test_over_long_terms_are_not_indexed_but_still_count_in_the_length(tmp_path: Path) -> None:
    junk = "a1" * (MAX_TERM_BYTES // 2 + 1)  # one word, longer than the bound once stemmed
    assert not keep_term(junk) and keep_term("a1" * (MAX_TERM_BYTES // 2))
    ours = streamed(tmp_path / "bm25", [f"cache {junk}", "cache", junk], 3)
    assert ours._vocab.get(junk) is None and junk not in (tmp_path / "bm25" / "vocab.index.json").read_text()
    assert ours.top(terms(junk), 10)[0].size == 0
    scores = ours.scores(terms("cache"))
    assert 0 < scores[0] < scores[1], "the longer passage scores lower: the junk word counts in its length"


def test_past_the_term_limit_the_most_frequent_terms_stay() -> None:
    vocab = {"once": 0, "thrice": 1, "twice": 2, "also_once": 3}
    df = np.array([1, 3, 2, 1])
    assert bounded(vocab, df, limit=2) == {"thrice": 1, "twice": 2}
    assert bounded(vocab, df, limit=3) == {"once": 0, "thrice": 1, "twice": 2}, "ties: the term seen first"
    assert bounded(vocab, df, limit=4) == vocab


# --- issue 15: one text form, words whole in every script -------------------------------------------------


def test_both_unicode_forms_of_a_word_are_one_term() -> None:
    import unicodedata

    composed, decomposed = "Die Daten wurden geprüft", unicodedata.normalize("NFD", "Die Daten wurden geprüft")
    assert composed != decomposed
    assert terms(composed) == terms(decomposed) == ["die", "daten", "wurden", "geprüft"]


def test_words_keep_their_combining_marks() -> None:
    """A Bengali vowel sign is a mark, not a letter: `re`'s \\w cut "ব্যবস্থা" into pieces."""
    assert terms("ডেটাবেস হলো তথ্য সংরক্ষণের একটি ব্যবস্থা।") == ["ডেটাবেস", "হলো", "তথ্য", "সংরক্ষণের", "একটি", "ব্যবস্থা"]


def test_scripts_without_spaces_are_indexed_as_character_pairs() -> None:
    assert terms("数据库") == ["数据", "据库"]
    assert terms("缓存 Redis") == ["缓存", "redi"]
    assert terms("数") == ["数"]
    assert set(terms("吞吐量")) <= set(terms("整个集群的吞吐量可以随着机器数量线性增长"))


def test_ascii_and_latin_text_keep_the_english_analyzer() -> None:
    assert terms("How are the Caches Sharded?") == terms("How are the “Caches” Sharded?") == ["cach", "shard"]
    assert terms("café naïve résumés") == ["café", "naïv", "résumé"]


def test_a_decomposed_page_is_found_by_a_composed_query_in_bm25(tmp_path: Path) -> None:
    import unicodedata

    texts = [unicodedata.normalize("NFD", "Die Messwerte wurden geprüft."), "Vögel im Garten.", "数据库的分片"]
    index = streamed(tmp_path, texts, batch=2)
    assert index.top(terms("geprüft"), 3)[0].tolist() == [0]
    assert index.top(terms(unicodedata.normalize("NFD", "Vögel")), 3)[0].tolist() == [1]
    assert index.top(terms("分片"), 3)[0].tolist() == [2]
