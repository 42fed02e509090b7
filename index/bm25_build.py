"""Build the BM25 index from a stream of passages, in bounded memory, in bm25s' folder format.

Why not `bm25s.BM25.index`: it needs the whole tokenised corpus as Python lists
(measured: ~10 GB at a million passages), which is what a streaming build must
avoid. This builder computes the same matrix (Lucene BM25, the same analyzer,
k1, b; a test checks equality with bm25s on the same texts) in two passes:

1. `add(texts)` per batch: terms → ids (the vocabulary is the only thing that
   grows in memory), and each passage's (term, count) pairs appended to a
   temporary file with one np.unique per batch;
2. `finish()`: document frequencies, idf and lengths are known; the postings are
   scattered, term by term, into memory-mapped CSC arrays (a counting sort, no
   global sort), one spilled chunk at a time.

The result is bm25s' folder layout (`data/indices/indptr.csc.index.npy`,
`vocab.index.json`, `params.index.json`) plus the sorted vocabulary
(`index.vocabulary`: bounded by its two rules), which `LexicalIndex.load` memory-maps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index import vocabulary
from index.lexical import BM25_B, BM25_K1, BM25_METHOD, terms

DATA_FILE = "data.csc.index.npy"
INDICES_FILE = "indices.csc.index.npy"
INDPTR_FILE = "indptr.csc.index.npy"
VOCAB_FILE = "vocab.index.json"
PARAMS_FILE = "params.index.json"
SPILL_FILE = ".postings.spill"
# One spilled record: passage row, term id, count in the passage.
SPILL_DTYPE = np.dtype([("row", "<i4"), ("term", "<i4"), ("tf", "<i4")])
# bm25s adds an empty-string token so that empty queries have an id; kept for format parity.
EMPTY_TOKEN = ""


class StreamingBM25:
    """Add passages in row order with `add`, then `finish` writes the index into `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._vocab: dict[str, int] = {}
        self._df = np.zeros(1024, dtype=np.int64)
        self._lengths: list[np.ndarray] = []
        self._chunks: list[int] = []  # records per spilled batch
        self._rows = 0
        self._spill = open(folder / SPILL_FILE, "wb")  # noqa: SIM115 - closed in finish/abort

    @property
    def rows(self) -> int:
        return self._rows

    def add(self, texts: Sequence[str]) -> None:
        """Index the next `len(texts)` passages (rows continue from the previous batch)."""
        vocab = self._vocab
        ids: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.int32)
        kept_counts = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            doc = terms(text)
            lengths[i] = len(doc)
            kept = 0
            for term in doc:
                tid = vocab.get(term)
                if tid is None:
                    if not vocabulary.keep_term(term):
                        continue  # still counted in the passage's length, as bm25s would
                    tid = vocab[term] = len(vocab)
                ids.append(tid)
                kept += 1
            kept_counts[i] = kept
        term_ids = np.asarray(ids, dtype=np.int64)
        local_rows = np.repeat(np.arange(len(texts), dtype=np.int64), kept_counts)
        keys, counts = np.unique(local_rows << 32 | term_ids, return_counts=True)
        records = np.empty(len(keys), dtype=SPILL_DTYPE)
        records["row"] = (keys >> 32) + self._rows
        records["term"] = keys & 0xFFFFFFFF
        records["tf"] = counts
        records.tofile(self._spill)
        if len(vocab) > len(self._df):
            self._df = np.concatenate((self._df, np.zeros(max(len(vocab), 2 * len(self._df)), dtype=np.int64)))
        self._df += np.bincount(records["term"], minlength=len(self._df))
        self._lengths.append(lengths)
        self._chunks.append(len(records))
        self._rows += len(texts)

    def finish(self) -> None:
        """Write the CSC arrays, vocabulary and parameters; removes the spill file."""
        self._spill.close()
        spill = self.folder / SPILL_FILE
        vocab_size = len(self._vocab)
        df = self._df[:vocab_size]
        n = self._rows
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        average = float(lengths.mean()) if n and lengths.sum() > 0 else 1.0  # all-empty corpus: any value
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = (BM25_K1 * ((1 - BM25_B) + BM25_B * lengths / average)).astype(np.float32)
        # The empty token gets an empty column, as in bm25s.
        indptr = np.zeros(vocab_size + 2, dtype=np.int64)
        np.cumsum(df, out=indptr[1 : vocab_size + 1])
        indptr[-1] = indptr[-2]
        total = int(indptr[-1])
        data = _open_array(self.folder / DATA_FILE, total, np.float32)
        indices = _open_array(self.folder / INDICES_FILE, total, np.int32)
        cursor = indptr[:-2].copy()
        with open(spill, "rb") as f:
            for count in self._chunks:
                if count == 0:
                    continue
                records = np.fromfile(f, dtype=SPILL_DTYPE, count=count)
                tf = records["tf"].astype(np.float32)
                row = records["row"]
                term = records["term"].astype(np.int64)
                scores = idf[term] * tf / (norm[row] + tf)
                # Stable by term: within a term, rows stay ascending (batches come in row order).
                order = np.argsort(term, kind="stable")
                term, row, scores = term[order], row[order], scores[order]
                starts = np.flatnonzero(np.concatenate(([True], term[1:] != term[:-1])))
                within = np.arange(len(term)) - np.repeat(starts, np.diff(np.append(starts, len(term))))
                positions = cursor[term] + within
                data[positions] = scores
                indices[positions] = row
                cursor[term[starts]] += np.diff(np.append(starts, len(term)))
        del data, indices  # unmapping flushes
        np.save(self.folder / INDPTR_FILE, indptr)
        spill.unlink()
        vocab = vocabulary.bounded(self._vocab, df)
        vocabulary.write_sorted(self.folder, vocab)
        vocab[EMPTY_TOKEN] = vocab_size
        (self.folder / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        params = {"k1": BM25_K1, "b": BM25_B, "delta": 0.5, "method": BM25_METHOD, "idf_method": BM25_METHOD,
                  "dtype": "float32", "int_dtype": "int32", "num_docs": n, "version": "linklens-streaming",
                  "backend": "numpy"}  # fmt: skip
        (self.folder / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")

    def abort(self) -> None:
        self._spill.close()


def _open_array(path: Path, length: int, dtype: type) -> Any:
    """A writable .npy memory map of `length` elements (an empty file for length 0)."""
    if length == 0:
        np.save(path, np.zeros(0, dtype=dtype))
        return np.zeros(0, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
