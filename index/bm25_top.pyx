# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The best `n` BM25 rows of a query, in compiled code: one pass over the query's postings, one over the rows.

Why compiled: at a million passages a question's postings add up to 0.5-1.7 M
entries. numpy needs four passes over them and over the rows (concatenate,
bincount, cast, partition: ~8 ms); this does one scatter-add and one selecting
scan in C (~2 ms), without the GIL, so other searches run meanwhile.

Why exhaustive rather than dynamic pruning (MaxScore / block-max WAND): measured
on the 1M benchmark corpus (bench/index.py; prototypes of both in compiled code),
exhaustive scoring was the fastest: p50 2.2 ms, p90 3.4 ms; document-at-a-time
MaxScore 4.7 / 19 ms; windowed MaxScore 3.7 / 10 ms. A question's top 100
passages match most of its words, so few postings lists become skippable, and
probing the skipped lists costs more than scanning them.

Why Cython and not numba: numba's cached code still costs each fresh process
~0.65 s (numba imports scipy.linalg to check for BLAS) and ~50 MB of private
memory; this extension costs neither.

Guaranteed: the same rows and float32 scores as `LexicalIndex.scores` ranked by
(score descending, row ascending) and cut to `n`, since scores are summed in
float64 in the same order (query term order, duplicates included) and compared
after the same cast to float32.
"""

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np


cdef inline bint _worse(float score_a, int64_t row_a, float score_b, int64_t row_b) noexcept nogil:
    """True when (score_a, row_a) ranks below (score_b, row_b): lower score, or the same score and a later row."""
    return score_a < score_b or (score_a == score_b and row_a > row_b)


cdef void _sift_down(float* scores, int64_t* rows, int64_t size, int64_t i) noexcept nogil:
    cdef int64_t child
    cdef float s
    cdef int64_t r
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _worse(scores[child + 1], rows[child + 1], scores[child], rows[child]):
            child += 1
        if not _worse(scores[child], rows[child], scores[i], rows[i]):
            return
        s = scores[i]; scores[i] = scores[child]; scores[child] = s
        r = rows[i]; rows[i] = rows[child]; rows[child] = r
        i = child


cdef void _sift_up(float* scores, int64_t* rows, int64_t i) noexcept nogil:
    cdef int64_t parent
    cdef float s
    cdef int64_t r
    while i > 0:
        parent = (i - 1) // 2
        if not _worse(scores[i], rows[i], scores[parent], rows[parent]):
            return
        s = scores[i]; scores[i] = scores[parent]; scores[parent] = s
        r = rows[i]; rows[i] = rows[parent]; rows[parent] = r
        i = parent


def top_rows(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const float[::1] data,
    const int64_t[::1] terms,
    int64_t rows,
    int64_t n,
    const unsigned char[::1] allowed,
):
    """(rows, float32 scores) of the best `n` rows with a positive score, in no particular order.

    `indptr`/`indices`/`data` are the CSC postings (column = term); `terms` the
    query's term ids in query order, repeats kept; `allowed` a 0/1 byte per row,
    or empty for every row.
    """
    cdef bint masked = allowed.shape[0] > 0
    if masked and allowed.shape[0] != rows:
        raise ValueError(f"allowed has {allowed.shape[0]} entries for {rows} rows")
    if n <= 0 or rows <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    cdef double* total = <double*> calloc(rows, sizeof(double))
    cdef float* best_scores = <float*> malloc(n * sizeof(float))
    cdef int64_t* best_rows = <int64_t*> malloc(n * sizeof(int64_t))
    if total == NULL or best_scores == NULL or best_rows == NULL:
        free(total); free(best_scores); free(best_rows)
        raise MemoryError(f"no memory for scoring {rows} rows")
    cdef int64_t size = 0, t, p, stop, row
    cdef float score, floor = 0.0
    cdef int64_t[::1] row_view
    cdef float[::1] score_view
    try:
        with nogil:
            for t in range(terms.shape[0]):
                p = indptr[terms[t]]
                stop = indptr[terms[t] + 1]
                while p < stop:
                    total[indices[p]] += data[p]
                    p += 1
            # Rows come in ascending order, so a later row never wins a tie against a kept one:
            # a row enters only with a score strictly above the kept n-th (the floor).
            for row in range(rows):
                score = <float> total[row]
                if score > floor and (not masked or allowed[row]):
                    if size < n:
                        best_scores[size] = score
                        best_rows[size] = row
                        _sift_up(best_scores, best_rows, size)
                        size += 1
                    else:
                        best_scores[0] = score
                        best_rows[0] = row
                        _sift_down(best_scores, best_rows, size, 0)
                    if size == n:
                        floor = best_scores[0]
        out_rows = np.empty(size, dtype=np.int64)
        out_scores = np.empty(size, dtype=np.float32)
        row_view = out_rows
        score_view = out_scores
        for p in range(size):
            row_view[p] = best_rows[p]
            score_view[p] = best_scores[p]
        return out_rows, out_scores
    finally:
        free(total)
        free(best_scores)
        free(best_rows)
