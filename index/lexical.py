"""Lexical retrieval: BM25 over stemmed passage words, and the analyzer snippets reuse.

Why BM25 beside the embeddings: names, acronyms and rare terms ("Raft",
"memcached", "P99") are matched exactly by BM25 while a small embedding model
blurs them; fusing both beats either alone on the judged queries.

bm25s builds and saves the index (its standard folder format). Scoring a query
is done here with one `np.bincount` over the postings of the query's terms,
which is several times faster than bm25s' per-term `np.add.at` and lets a
filter mask apply before ranking.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

STEMMER_LANGUAGE = "english"
# NLTK's English list: questions are full of "how", "what", "when" that Lucene's
# 33-word list would keep and match everywhere.
STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
BM25_K1 = 1.2
BM25_B = 0.75
BM25_METHOD = "lucene"
STEM_CACHE_SIZE = 200_000
_WORD = re.compile(r"\w\w+", re.UNICODE)
_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    """One stemmer per thread: PyStemmer objects are not safe to share between threads."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE)
    return stemmer


@lru_cache(maxsize=STEM_CACHE_SIZE)
def stem(word: str) -> str:
    """Stem of a lower-cased word."""
    return str(_stemmer().stemWord(word))


def words(text: str) -> list[str]:
    """Lower-cased words of two or more letters/digits, as BM25 sees them."""
    return _WORD.findall(text.lower())


def terms(text: str) -> list[str]:
    """The BM25 terms of `text`: words minus stopwords, stemmed."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def query_stems(text: str) -> frozenset[str]:
    return frozenset(terms(text))


class LexicalIndex:
    """A BM25 index over passages (row i = passage i), loaded fully into memory."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, vocab: dict[str, int], rows: int):
        self._data = data
        self._indices = indices
        self._indptr = indptr
        self._vocab = vocab
        self.rows = rows

    @classmethod
    def build(cls, texts: Sequence[str]) -> tuple[LexicalIndex, bm25s.BM25]:
        """Index `texts`; returns the index and the bm25s retriever that can `save` it."""
        retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method=BM25_METHOD)
        retriever.index([terms(t) for t in texts], show_progress=False)
        return cls._from_retriever(retriever, len(texts)), retriever

    @classmethod
    def load(cls, folder: Path, rows: int) -> LexicalIndex:
        retriever = bm25s.BM25.load(str(folder), show_progress=False)
        return cls._from_retriever(retriever, rows)

    @classmethod
    def _from_retriever(cls, retriever: bm25s.BM25, rows: int) -> LexicalIndex:
        s = retriever.scores
        return cls(
            np.asarray(s["data"], dtype=np.float32),
            np.asarray(s["indices"], dtype=np.int64),
            np.asarray(s["indptr"], dtype=np.int64),
            dict(retriever.vocab_dict),
            rows,
        )

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for the query terms (0 where none occurs)."""
        ids = [self._vocab[t] for t in query_terms if t in self._vocab]
        if not ids:
            return np.zeros(self.rows, dtype=np.float32)
        slices = [slice(self._indptr[i], self._indptr[i + 1]) for i in ids]
        postings = np.concatenate([self._indices[s] for s in slices])
        weights = np.concatenate([self._data[s] for s in slices])
        return np.bincount(postings, weights=weights, minlength=self.rows).astype(np.float32)

    def top(self, query_terms: Sequence[str], n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best `n` passages with a positive score, best first.

        `allowed` is a boolean mask over rows (filters); ties break by row, i.e. list order.
        """
        scores = self.scores(query_terms)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        hits = np.flatnonzero(scores > 0)
        if hits.size > n:
            hits = hits[np.argpartition(-scores[hits], n - 1)[:n]]
        order = np.lexsort((hits, -scores[hits]))
        hits = hits[order]
        return hits, scores[hits]
