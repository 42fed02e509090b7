"""The extraction job as the crawler's worker processes run it.

Why a module of its own: the crawler's main process only needs a picklable
reference to this function. Importing `ingest.extract` there would load
trafilatura and lxml (~60 MB, ~0.5 s) into a process that never parses a page;
the workers' forkserver preloads `ingest.extract` instead.
"""

from __future__ import annotations

from ingest.models import Document, FetchedBody

WORKER_PRELOAD = ["ingest.extract"]


def extract_in_worker(body: FetchedBody, fallback_title: str) -> Document:
    from ingest.extract import extract_document

    return extract_document(body, fallback_title)
