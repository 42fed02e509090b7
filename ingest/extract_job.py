"""The extraction job as the crawler's worker processes run it.

Why a module of its own: the crawler's main process only needs a picklable
reference to this function. Importing `ingest.extract` there would load
trafilatura and lxml (~60 MB, ~0.5 s) into a process that never parses a page;
the workers' forkserver preloads `ingest.extract` instead.
"""

from __future__ import annotations

import zlib

from ingest.models import Document, FetchedBody

WORKER_PRELOAD = ["ingest.extract"]
BODY_COMPRESSION_LEVEL = 6


def extract_in_worker(body: FetchedBody, fallback_title: str, include_comments: bool = False) -> Document:
    from ingest.extract import extract_document

    return extract_document(body, fallback_title, include_comments=include_comments)


def warm_up() -> None:
    """Run once per worker at crawl start, so the pool is up before the first page arrives."""
    import ingest.extract  # noqa: F401 - preloaded by the forkserver; this only makes sure


def extract_and_compress(body: FetchedBody, fallback_title: str,
                         include_comments: bool = False) -> tuple[Document, bytes]:
    """The document and the body compressed for the store: both CPU work, both off the event loop.

    The crawl binds `include_comments` (`functools.partial`, picklable) from its settings.
    """
    return extract_in_worker(body, fallback_title, include_comments), compress_body(body.body)


def compress_body(raw: bytes) -> bytes:
    return zlib.compress(raw, BODY_COMPRESSION_LEVEL)
