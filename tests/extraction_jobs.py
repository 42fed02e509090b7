"""Test-only extraction jobs: pages that make the worker hang, crash or blow its memory on purpose.

`misbehaving_job` is handed to `ExtractionPool(job=...)` by tests only; production code has
no way to reach it. Pages carry a marker comment saying what to do; pages without one go
through the real extractor, so good neighbours are extracted for real.
"""

from __future__ import annotations

import os
import re
import threading
import time

from ingest.extract_job import extract_and_compress
from ingest.models import Document, FetchedBody

HANG = "<!-- linklens-test: hang -->"
CRASH = "<!-- linklens-test: crash -->"
HOG = "<!-- linklens-test: allocate -->"
RAISE = "<!-- linklens-test: raise -->"
DIE_IDLE = "<!-- linklens-test: die after answering -->"
SLOW_RESULT = "<!-- linklens-test: result slow to receive -->"
CRASH_EXIT_CODE = 3
# CPython's forkserver answers 255 when it loses a child's exit status (popen_forkserver's poll on an
# early EOF), which happens now and then on a loaded machine: the crash is still this page's.
LOST_EXIT_CODE = 255
CRASHED = re.compile(rf"extractor crashed \(worker exited with code ({CRASH_EXIT_CODE}|{LOST_EXIT_CODE})\)")
DIE_IDLE_AFTER_S = 0.2
HOG_BYTES = 8 * 2**30  # far past any memory limit a test sets
HANG_S = 3600.0
SLOW_RECEIVE_S = 0.5  # several of pebble's 0.1 s manager ticks


def _arrive_slowly(value: str) -> str:
    time.sleep(SLOW_RECEIVE_S)
    return value


class SlowToReceive(str):
    """A string that takes SLOW_RECEIVE_S to unpickle: the result sits half-received in the main process."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _arrive_slowly, (str(self),)


def misbehaving_job(body: FetchedBody, fallback_title: str) -> tuple[Document, bytes]:
    if HANG.encode() in body.body:
        time.sleep(HANG_S)
    if CRASH.encode() in body.body:
        os._exit(CRASH_EXIT_CODE)
    if HOG.encode() in body.body:
        hog = bytearray(HOG_BYTES)
        hog[-1] = 1
    if RAISE.encode() in body.body:
        raise ValueError("a parser bug on this page")
    if DIE_IDLE.encode() in body.body:  # answer, then die while idle: pebble then declares its whole pool broken
        threading.Timer(DIE_IDLE_AFTER_S, os._exit, args=(CRASH_EXIT_CODE,)).start()
    document, compressed = extract_and_compress(body, fallback_title)
    if SLOW_RESULT.encode() in body.body:
        document.sitename = SlowToReceive("received slowly")
    return document, compressed


def marked_page(marker: str, title: str) -> str:
    """An article-sized HTML page carrying `marker`; the real extractor would read it fine."""
    words = " ".join(f"Sentence {i} about queues, shards and replicas in a distributed system." for i in range(30))
    return (f"<!doctype html><html><head><title>{title}</title></head><body>{marker}"
            f"<article><h1>{title}</h1><p>{words}</p></article></body></html>")


def nested_page(depth: int) -> str:
    """Pathological HTML: `depth` nested elements around one paragraph."""
    return ("<!doctype html><html><head><title>Nested</title></head><body>" + "<div>" * depth
            + "<p>Deep inside.</p>" + "</div>" * depth + "</body></html>")


def attribute_bomb_page(attributes: int) -> str:
    """Pathological HTML that keeps libxml2's parser busy in C for minutes (duplicate-attribute checks)."""
    attrs = " ".join(f"a{i}=x" for i in range(attributes))
    return f"<!doctype html><html><head><title>Bomb</title></head><body><div {attrs}>text</div></body></html>"
