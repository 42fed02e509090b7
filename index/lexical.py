"""Lexical retrieval: BM25 over stemmed passage words, and the analyzer snippets reuse.

Why BM25 beside the embeddings: names, acronyms and rare terms ("Raft",
"memcached", "P99") are matched exactly by BM25 while a small embedding model
blurs them; fusing both beats either alone on the judged queries.

`index.bm25_build` writes the index in bm25s' folder format from a stream of
passages (bm25s itself needs the whole corpus in memory). Loading and scoring
are done here with numpy alone, the arrays memory-mapped: importing bm25s pulls in scipy (~0.4 s
of every `linklens search`), and one `np.bincount` over the postings of the
query's terms is several times faster than bm25s' per-term `np.add.at`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import Stemmer

from index.stopwords import STOPWORDS_EN_PLUS

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
    """A BM25 index over passages (row i = passage i); its arrays are memory-mapped, shared between processes."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, vocab: dict[str, int], rows: int):
        self._data = np.asarray(data, dtype=np.float32)
        self._indices = np.asarray(indices, dtype=np.int32)
        self._indptr = np.asarray(indptr, dtype=np.int64)
        self._vocab = vocab
        self.rows = rows
        self._max: dict[int, float] = {}  # largest score of a term, filled as queries use terms

    @classmethod
    def load(cls, folder: Path, rows: int) -> LexicalIndex:
        """Read a folder in bm25s' format (arrays as .npy, vocabulary as JSON); the arrays are memory-mapped."""
        data = np.load(folder / "data.csc.index.npy", mmap_mode="r")
        indices = np.load(folder / "indices.csc.index.npy", mmap_mode="r")
        indptr = np.load(folder / "indptr.csc.index.npy", mmap_mode="r")
        vocab = json.loads((folder / "vocab.index.json").read_text(encoding="utf-8"))
        return cls(data, indices, indptr, vocab, rows)

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for the query terms (0 where none occurs)."""
        ids = [self._vocab[t] for t in query_terms if t in self._vocab]
        if not ids:
            return np.zeros(self.rows, dtype=np.float32)
        slices = [slice(self._indptr[i], self._indptr[i + 1]) for i in ids]
        postings = np.concatenate([self._indices[s] for s in slices])
        weights = np.concatenate([self._data[s] for s in slices])
        return np.bincount(postings, weights=weights, minlength=self.rows).astype(np.float32)

    def top(
        self, query_terms: Sequence[str], n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best `n` passages with a positive score, best first.

        `allowed` is a boolean mask over rows (filters); ties break by row, i.e. list
        order, at the cut too. The same result as ranking `scores()`, without scoring
        every row when the query has rare terms (see `_candidates`).
        """
        ids = [self._vocab[t] for t in query_terms if t in self._vocab]
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        found = self._candidates(ids, n, allowed)
        if found is None:
            scores = self.scores(query_terms)
            if allowed is not None:
                scores = np.where(allowed, scores, 0.0)
            hits = np.flatnonzero(scores > 0)
            values = scores[hits]
        else:
            hits, values = found
            keep = values > 0
            hits, values = hits[keep], values[keep]
        if hits.size > n:
            nth = np.partition(values, hits.size - n)[hits.size - n]
            keep = values >= nth  # every row tied with the n-th, so the row order can decide
            hits, values = hits[keep], values[keep]
        order = np.lexsort((hits, -values))[:n]
        return hits[order].astype(np.int64), values[order]

    def _candidates(self, ids: list[int], n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact scores of a few rows that surely hold the top `n`; None when pruning would not pay.

        Why: at a million passages a query's common terms ("data", "system") have
        postings in a third of all rows, and scoring every row costs more than the
        5 ms budget. A term adds at most its largest posting score, so the rare terms
        (highest bounds) are summed first; once the n-th best partial score exceeds
        the remaining terms' bounds, no unseen row can reach the top n, and the
        common terms are looked up (binary search) only for the rows still in the
        race. Final scores are summed in query-term order in float64, as `scores()` does.
        """
        counts: dict[int, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        bounds = {i: self._term_max(i) * c for i, c in counts.items()}
        by_bound = sorted(counts, key=lambda i: -bounds[i])
        remaining = sum(bounds.values())
        budget = self.rows // PRUNE_MAX_SHARE_DIVISOR
        taken: list[int] = []
        size = 0
        seen: np.ndarray = np.zeros(0, dtype=np.int64)
        partial: np.ndarray = np.zeros(0, dtype=np.float64)
        threshold = 0.0
        for term in by_bound:
            length = int(self._indptr[term + 1] - self._indptr[term])
            size += length
            if size > budget:
                return None
            taken.append(term)
            remaining -= bounds[term]
            parts = [self._postings(t) for t in taken]
            rows = np.concatenate([r for r, _ in parts])
            weights = np.concatenate([w.astype(np.float64) * counts[t] for t, (_, w) in zip(taken, parts, strict=True)])
            seen, inverse = np.unique(rows, return_inverse=True)
            partial = np.bincount(inverse, weights=weights, minlength=len(seen))
            live = partial if allowed is None else np.where(allowed[seen], partial, 0.0)
            threshold = float(np.partition(live, len(live) - n)[len(live) - n]) if len(live) >= n else 0.0
            if threshold > remaining * (1 + PRUNE_MARGIN):
                break
        race = partial + remaining * (1 + PRUNE_MARGIN) >= threshold
        if allowed is not None:
            race &= allowed[seen]
        seen = seen[race].astype(np.int64)
        total = np.zeros(len(seen), dtype=np.float64)
        for term in ids:  # query order, like np.bincount over the concatenated postings
            rows, weights = self._postings(term)
            if not len(rows):
                continue
            at = np.minimum(np.searchsorted(rows, seen), len(rows) - 1)
            hit = rows[at] == seen
            total[hit] += weights[at[hit]]
        return seen, total.astype(np.float32)

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(int(self._indptr[term]), int(self._indptr[term + 1]))
        return self._indices[span], self._data[span]

    def _term_max(self, term: int) -> float:
        found = self._max.get(term)
        if found is None:
            _, weights = self._postings(term)
            found = self._max[term] = float(weights.max()) if len(weights) else 0.0
        return found


# Bounds are compared with this relative slack, so float rounding can never prune a row that belongs.
PRUNE_MARGIN = 1e-6
# Pruning gives up (and every row is scored) once the rare terms' postings exceed rows / this.
PRUNE_MAX_SHARE_DIVISOR = 16
