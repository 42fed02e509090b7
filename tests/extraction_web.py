"""A fixture web for the extraction side of the hostile web: bodies that are not text, charset lies,
pages that hang, crash or blow up the extractor.

It is the project's `FixtureWeb` (same hosts, robots, fake web archive, list markdown) with its
fault table replaced by the cases below, so a crawl over it takes seconds. Every case is a link
under `## Faults`; `EXTRACTION_CASES` says where each must end and with which reason.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tests.charset_pages import charset_pages
from tests.extraction_jobs import (
    CRASH,
    CRASH_EXIT_CODE,
    HANG,
    HOG,
    RAISE,
    attribute_bomb_page,
    marked_page,
    nested_page,
)
from tests.fixtureweb import pages
from tests.fixtureweb.server import (
    ARCHIVE_TIMESTAMP,
    FixtureArticle,
    FixtureWeb,
    Handler,
    Request,
    Response,
    normalize_url,
)

# Generous for a loaded 2-core machine (good pages take ~10 ms quiet, 50k nested elements ~0.2 s), short
# enough that the hangs cost the suite seconds.
TEST_TIMEOUT_S = 5.0
TEST_MEMORY_MB = 512
NESTED_DEPTH = 50_000
# ~3 minutes of libxml2 time on this machine (quadratic): far past the test's time limit, in C code,
# so only SIGKILL stops it.
BOMB_ATTRIBUTES = 60_000
CREME = "crème brûlée"
CHARSET_PARAGRAPH = (f"The {CREME} came out of the oven at the café. " * 8
                     + "Every accented letter here must read as written, never as mojibake.")
MARKDOWN_PARAGRAPH = "Consistent hashing keeps most keys on their server when the ring grows. " * 6


@dataclass(frozen=True)
class Case:
    path: str
    state: str
    reason: str  # the exact reason the link must end with ("" when the state's usual reason is fine)
    response: Response


def png_bytes() -> bytes:
    """A real 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0\0\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not an article " * 100)
    return buffer.getvalue()


def charset_page(meta: str) -> str:
    return (f"<!doctype html><html><head>{meta}<title>Dessert</title></head><body><article><h1>Dessert</h1>"
            f"<p>{CHARSET_PARAGRAPH}</p></article></body></html>")


def _html(page: str) -> Response:
    return Response(200, page.encode(), "text/html; charset=utf-8")


def cases(pdf_article: FixtureArticle) -> dict[str, Case]:
    bom = b"\xef\xbb\xbf"
    return {
        # item 4: only text is extracted
        "zip": Case("/files/notes.zip", "unsupported", "not text: a ZIP archive (application/zip)",
                    Response(200, zip_bytes(), "application/zip")),
        "octet-binary": Case("/files/blob.bin", "unsupported",
                             "not text: unrecognised binary data (application/octet-stream)",
                             Response(200, random.Random(7).randbytes(4096), "application/octet-stream")),
        "png-as-html": Case("/extract/png-as-html", "unsupported",
                            "not text: a PNG image (image/png) labelled text/html",
                            Response(200, png_bytes(), "text/html; charset=utf-8")),
        "empty": Case("/extract/empty", "unsupported", "nothing to index: an empty body labelled text/html",
                      Response(200, b"", "text/html; charset=utf-8")),
        "markdown": Case("/files/notes.md", "ok", "",
                         Response(200, f"# Ring notes\n\n{MARKDOWN_PARAGRAPH}\n".encode(), "text/markdown")),
        "pdf-as-octet": Case(f"/files/{pdf_article.slug}.pdf", "ok", "",
                             Response(200, pages.build_pdf(pdf_article), "application/octet-stream")),
        "html-as-text": Case("/extract/html-as-text", "ok", "",
                             Response(200, charset_page('<meta charset="utf-8">').encode(),
                                      "text/plain; charset=utf-8")),
        # item 5: text decoded right
        "utf8-under-latin1": Case("/extract/utf8-under-latin1", "ok", "",
                                  Response(200, charset_page('<meta charset="utf-8">').encode(),
                                           "text/html; charset=iso-8859-1")),
        "bom-under-cp1252": Case("/extract/bom-under-cp1252", "ok", "",
                                 Response(200, bom + charset_page("").encode(), "text/html; charset=windows-1252")),
        # item 3: extraction in isolation (the misbehaving job acts on the markers; the rest is real)
        "hang": Case("/extract/hang", "failed", f"extraction timed out after {TEST_TIMEOUT_S:g} s",
                     _html(marked_page(HANG, "Hangs the extractor"))),
        "crash": Case("/extract/crash", "failed", f"extractor crashed (worker exited with code {CRASH_EXIT_CODE})",
                      _html(marked_page(CRASH, "Crashes the worker"))),
        "hog": Case("/extract/hog", "failed",
                    f"extraction ran out of memory (over the {TEST_MEMORY_MB} MB limit per worker)",
                    _html(marked_page(HOG, "Allocates past the limit"))),
        "raise": Case("/extract/raise", "failed", "extractor crashed (ValueError: a parser bug on this page)",
                      _html(marked_page(RAISE, "Raises in the parser"))),
        "nested": Case("/extract/nested", "ok", "", _html(nested_page(NESTED_DEPTH))),
        "attribute-bomb": Case("/extract/attribute-bomb", "failed", f"extraction timed out after {TEST_TIMEOUT_S:g} s",
                               _html(attribute_bomb_page(BOMB_ATTRIBUTES))),
        # issue 15: text as written (tests/charset_pages.py)
        **{page.name: Case(page.path, page.state, page.reason, Response(200, page.body, page.content_type))
           for page in charset_pages()},
    }


ARCHIVED_PNG = Case("/extract/moved-image", "unsupported",
                    f"not text: a PNG image (image/png) (the web archive's copy of {ARCHIVE_TIMESTAMP})",
                    Response(200, png_bytes(), "image/png"))


class ExtractionWeb(FixtureWeb):
    """FixtureWeb whose faults are the extraction cases; `case_urls()` maps case name -> listed URL.

    `only` keeps a subset of the cases (by name), for tests that need no hang to wait out.
    """

    def __init__(self, articles: Sequence[FixtureArticle], n_hosts: int, only: Collection[str] | None = None) -> None:
        super().__init__(articles, n_hosts=n_hosts)
        self._only = set(only) if only is not None else None

    def case_urls(self) -> dict[str, str]:
        return dict(self._case_urls)

    def expected_reasons(self) -> dict[str, str]:
        every = {**cases(self.articles[-1]), "archived-png": ARCHIVED_PNG}
        return {self._case_urls[name]: case.reason for name, case in every.items()
                if case.reason and name in self._case_urls}

    def _build_faults(self, sp: dict[str, FixtureArticle], dedicated: bool) -> None:
        self._case_urls: dict[str, str] = {}
        chosen = {name: case for name, case in cases(self.articles[-1]).items()
                  if self._only is None or name in self._only}
        for i, (name, case) in enumerate(chosen.items()):
            url = self._host(i) + case.path
            self._case_urls[name] = url
            self._add_fault(name, url, case.state, name.replace("-", " ").title(), None, _constant(case.response))
        if self._only is not None and "archived-png" not in self._only:
            return
        # live page gone, the archive holds a PNG: archived copies pass the same check
        live = self._host(0) + ARCHIVED_PNG.path
        self._case_urls["archived-png"] = live
        self._snapshots[normalize_url(live)] = (ARCHIVE_TIMESTAMP, "")
        self._route(f"{self.archive_url}/web/{ARCHIVE_TIMESTAMP}id_/{live}", _constant(ARCHIVED_PNG.response))
        self._add_fault("archived-png", live, ARCHIVED_PNG.state, "Moved Image")


def _constant(response: Response) -> Handler:
    def handler(request: Request) -> Response:
        return response
    return handler
