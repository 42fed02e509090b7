"""Lexical retrieval: BM25 over stemmed passage words, and the analyzer snippets reuse.

Why BM25 beside the embeddings: names, acronyms and rare terms ("Raft",
"memcached", "P99") are matched exactly by BM25 while a small embedding model
blurs them; fusing both beats either alone on the judged queries.

`index.bm25_build` writes the index in bm25s' folder format from a stream of
passages (bm25s itself needs the whole corpus in memory). Loading and scoring
are done here, the arrays memory-mapped, without bm25s: importing it pulls in
scipy (~0.4 s of every `linklens search`). `scores()` scores every passage with
numpy (one `np.bincount` over the query terms' postings, several times faster
than bm25s' per-term `np.add.at`) and is the reference; the query path's `top()`
gets the same head of that ranking from compiled code (`index.bm25_top`), ~4×
faster at a million passages.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex
import Stemmer

from index.bm25_top import top_rows
from index.stopwords import STOPWORDS_EN_PLUS
from index.vocabulary import SortedVocabulary
from ingest.textform import UNSPACED_RUN, nfc

STEMMER_LANGUAGE = "english"
# NLTK's English list: questions are full of "how", "what", "when" that Lucene's
# 33-word list would keep and match everywhere.
STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
BM25_K1 = 1.2
BM25_B = 0.75
BM25_METHOD = "lucene"
STEM_CACHE_SIZE = 200_000
# `top_rows` reads an empty mask as "every row".
_NO_MASK = np.zeros(0, dtype=np.uint8)
_WORD = re.compile(r"\w\w+", re.UNICODE)  # ASCII text: the fast path, and the reference for Latin words
# Any text: words are runs of letters, digits and the marks that belong to them (a Bengali vowel sign,
# a decomposed diaeresis), so no word is cut at a combining mark as `re`'s \w would cut it.
_UNICODE_WORD = regex.compile(r"[\p{L}\p{N}_][\p{L}\p{N}\p{M}_]*")
# Scripts written without spaces (`ingest.textform.UNSPACED_RUN`): a run of them is one "word" above. Each
# is indexed as its overlapping pairs of characters (a character being a base and its marks), as Lucene's
# CJK analyzer does: no dictionary to keep, and a query word of two or more characters matches wherever
# it occurs. A lone character is kept as it is.
_UNSPACED = UNSPACED_RUN
_CHARACTER = regex.compile(r"\X")
# Without marks and unspaced scripts, `_UNICODE_WORD` finds what `_WORD` (`re`'s \w: letters, numbers, _)
# finds, and `re` is faster: most non-ASCII pages are English or European text with a few accents or quotes.
_NEEDS_UNICODE_WORDS = regex.compile(rf"\p{{M}}|{UNSPACED_RUN.pattern}")
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
    """Lower-cased words of two or more letters/digits, as BM25 sees them (before pairing, see `terms`).

    The text is NFC-normalised first (`ingest.textform.nfc`), so every form of a word is one word.
    """
    if text.isascii():
        return _WORD.findall(text.lower())
    return _unicode_words(nfc(text).lower())


def _unicode_words(lowered: str) -> list[str]:
    if _NEEDS_UNICODE_WORDS.search(lowered) is None:
        return _WORD.findall(lowered)
    return [w for w in _UNICODE_WORD.findall(lowered) if len(w) > 1 or _UNSPACED.match(w)]


def terms(text: str) -> list[str]:
    """The BM25 terms of `text`: words minus stopwords, stemmed; runs of unspaced scripts as character pairs.

    ASCII text takes the original path (English stemming and stopwords); other text the same
    per word, with the CJK/Thai runs inside a word paired instead of stemmed.
    """
    if text.isascii():
        return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
    lowered = nfc(text).lower()
    if _NEEDS_UNICODE_WORDS.search(lowered) is None:
        return [stem(w) for w in _WORD.findall(lowered) if w not in STOPWORDS]
    out: list[str] = []
    for word in _unicode_words(lowered):
        if _UNSPACED.search(word) is None:
            if word not in STOPWORDS:
                out.append(stem(word))
            continue
        for piece in _split_unspaced(word):
            out.extend(piece)
    return out


def _split_unspaced(word: str) -> list[list[str]]:
    """A word cut into its unspaced runs (as character pairs) and the rest (stemmed words of 2+ characters)."""
    pieces: list[list[str]] = []
    at = 0
    for run in _UNSPACED.finditer(word):
        rest = word[at:run.start()]
        if len(rest) > 1 and rest not in STOPWORDS:
            pieces.append([stem(rest)])
        characters = _CHARACTER.findall(run.group())
        if len(characters) == 1:
            pieces.append(characters)
        else:
            pieces.append([a + b for a, b in zip(characters, characters[1:], strict=False)])
        at = run.end()
    rest = word[at:]
    if len(rest) > 1 and rest not in STOPWORDS:
        pieces.append([stem(rest)])
    return pieces


def query_stems(text: str) -> frozenset[str]:
    return frozenset(terms(text))


class LexicalIndex:
    """A BM25 index over passages (row i = passage i); its arrays are memory-mapped, shared between processes."""

    def __init__(
        self,
        data: np.ndarray,
        indices: np.ndarray,
        indptr: np.ndarray,
        vocab: Mapping[str, int] | SortedVocabulary,
        rows: int,
    ):
        self._data = np.asarray(data, dtype=np.float32)
        self._indices = np.asarray(indices, dtype=np.int32)
        self._indptr = np.asarray(indptr, dtype=np.int64)
        self._vocab = vocab
        self.rows = rows

    @classmethod
    def load(cls, folder: Path, rows: int) -> LexicalIndex:
        """Read a folder in bm25s' format; the arrays and the sorted vocabulary are memory-mapped.

        Snapshots built before the sorted vocabulary (`index.vocabulary`) existed
        have only bm25s' JSON one, read into a dict as before.
        """
        data = np.load(folder / "data.csc.index.npy", mmap_mode="r")
        indices = np.load(folder / "indices.csc.index.npy", mmap_mode="r")
        indptr = np.load(folder / "indptr.csc.index.npy", mmap_mode="r")
        vocab: Mapping[str, int] | SortedVocabulary | None = SortedVocabulary.open(folder)
        if vocab is None:
            vocab = json.loads((folder / "vocab.index.json").read_text(encoding="utf-8"))
        return cls(data, indices, indptr, vocab, rows)

    def _columns(self, query_terms: Sequence[str]) -> list[int]:
        """The CSC columns of the query terms the vocabulary knows."""
        found = (self._vocab.get(t) for t in query_terms)
        return [i for i in found if i is not None]

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for the query terms (0 where none occurs)."""
        ids = self._columns(query_terms)
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
        order, at the cut too. Exactly the head of `scores()`' ranking (a test checks
        it), computed in compiled code (`index.bm25_top`).
        """
        ids = np.asarray(self._columns(query_terms), dtype=np.int64)
        if not len(ids) or n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        mask = _NO_MASK if allowed is None else np.asarray(allowed, dtype=bool).view(np.uint8)
        rows, values = top_rows(self._indptr, self._indices, self._data, ids, self.rows, n, mask)
        order = np.lexsort((rows, -values))
        return rows[order], values[order]
