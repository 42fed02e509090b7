"""Limits of a search request, owned by the index stage and imported by `serve` and `cli`.

Why a module of its own: the HTTP API, the search page, the CLI and `Searcher`
must accept exactly the same k, and the CLI must be able to print the range in
its help without importing FAISS and BM25 (this module imports nothing).
"""

from __future__ import annotations

DEFAULT_K = 10
MIN_K = 1
# 50 articles is more than a page shows; each result costs CANDIDATES_PER_RESULT candidates per retriever.
MAX_K = 50
