"""The BM25 vocabulary on disk: a sorted, memory-mapped term table looked up by binary search.

Why not the JSON dict bm25s writes (still written beside it, for bm25s): a dict is
rebuilt in every process's private memory (every `--workers N` worker paid for its
own), and it grew with every junk token a page carried. The table here is two
`.npy` arrays mapped read-only, so every process that opens a snapshot shares one
copy of their pages in the page cache:

* `vocab.terms.npy`: the terms' UTF-8 bytes, fixed width, sorted bytewise;
* `vocab.ids.npy`: each term's column in the CSC arrays, aligned with the terms.

Bounded at build time by two rules (`keep_term`, `VocabularyBound`):
1. a term longer than `MAX_TERM_BYTES` bytes of UTF-8 is not indexed at all (base64,
   hashes, run-together URLs: nobody types them into a search box);
2. past `MAX_TERMS` distinct terms, the vocabulary keeps the `MAX_TERMS` terms found in
   the most passages (ties: the term seen first), so the table is at most
   `MAX_TERMS × MAX_TERM_BYTES` bytes, whatever the pages hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

TERMS_FILE = "vocab.terms.npy"
IDS_FILE = "vocab.ids.npy"
MAX_TERM_BYTES = 40
MAX_TERMS = 4_000_000


def keep_term(term: str) -> bool:
    """Rule 1: whether a term may enter the vocabulary at all."""
    return len(term.encode("utf-8")) <= MAX_TERM_BYTES


def bounded(vocab: Mapping[str, int], df: np.ndarray, limit: int = MAX_TERMS) -> dict[str, int]:
    """Rule 2: `vocab` itself when it holds at most `limit` terms, else its `limit` most frequent ones.

    `df[i]` is the number of passages holding term id i. The dropped terms' columns
    stay in the CSC arrays but nothing can reach them.
    """
    if len(vocab) <= limit:
        return dict(vocab)
    ids = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    order = np.lexsort((ids, -df[ids]))  # most passages first, then first seen
    kept = set(ids[order[:limit]].tolist())
    return {term: tid for term, tid in vocab.items() if tid in kept}


def write_sorted(folder: Path, vocab: Mapping[str, int]) -> None:
    """Write `vocab` (term -> column) as the sorted term table in `folder`."""
    encoded = [term.encode("utf-8") for term in vocab]
    width = max((len(t) for t in encoded), default=1) or 1
    terms = np.array(encoded, dtype=f"S{width}") if encoded else np.zeros(0, dtype="S1")
    ids = np.fromiter(vocab.values(), dtype=np.int32, count=len(vocab))
    order = np.argsort(terms, kind="stable")
    np.save(folder / TERMS_FILE, terms[order])
    np.save(folder / IDS_FILE, ids[order])


class SortedVocabulary:
    """Read side of the term table: `get(term)` by binary search over the mapped, sorted terms."""

    def __init__(self, terms: np.ndarray, ids: np.ndarray) -> None:
        self._terms = terms
        self._ids = ids
        self._width = terms.dtype.itemsize

    @classmethod
    def open(cls, folder: Path) -> SortedVocabulary | None:
        """The table in `folder`, memory-mapped; None for a snapshot built before it existed."""
        if not (folder / TERMS_FILE).exists():
            return None
        return cls(np.load(folder / TERMS_FILE, mmap_mode="r"), np.load(folder / IDS_FILE, mmap_mode="r"))

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and self.get(term) is not None

    def get(self, term: str, default: int | None = None) -> int | None:
        key = term.encode("utf-8")
        if not key or len(key) > self._width:
            return default  # the empty token and over-long terms are never in the table
        at = int(np.searchsorted(self._terms, key))
        if at < len(self._terms) and self._terms[at] == key:
            return int(self._ids[at])
        return default

    def ids(self, terms: Iterable[str]) -> list[int]:
        """The columns of the known terms among `terms`, in their order (unknown ones skipped)."""
        found = (self.get(t) for t in terms)
        return [i for i in found if i is not None]
