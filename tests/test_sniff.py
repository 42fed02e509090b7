"""What a body is, decided from its bytes as well as its label; the crawl's refusal of non-text bodies."""

from __future__ import annotations

import gzip
import random

import pytest

from ingest.models import CrawlOutcome, Document, FetchedBody, LinkState
from ingest.sniff import BodyKind, refuse_non_text, sniff
from tests.extraction_web import png_bytes, zip_bytes
from tests.fixtureweb import SAMPLE_ARTICLES
from tests.fixtureweb.pages import build_pdf

PDF = build_pdf(SAMPLE_ARTICLES[0])
HTML = b"<!DOCTYPE html><html><head><title>T</title></head><body><p>Words.</p></body></html>"
README_WITH_HTML = b'<p align="center"><img src="logo.png"></p>\n\n# Project\n\nSome words.\n'
RANDOM_BINARY = random.Random(1).randbytes(4096)


@pytest.mark.parametrize(("body", "label", "kind", "reason"), [
    (zip_bytes(), "application/zip", BodyKind.UNSUPPORTED, "not text: a ZIP archive (application/zip)"),
    (RANDOM_BINARY, "application/octet-stream", BodyKind.UNSUPPORTED,
     "not text: unrecognised binary data (application/octet-stream)"),
    (png_bytes(), "text/html; charset=utf-8", BodyKind.UNSUPPORTED,
     "not text: a PNG image (image/png) labelled text/html"),
    (gzip.compress(HTML), "text/html", BodyKind.UNSUPPORTED,
     "not text: a GZ archive (application/gzip) labelled text/html"),
    (b"", "text/html", BodyKind.UNSUPPORTED, "nothing to index: an empty body labelled text/html"),
    (b" \r\n\t ", "", BodyKind.UNSUPPORTED, "nothing to index: an empty body with no Content-Type"),
    (b'{"posts": []}', "application/json", BodyKind.UNSUPPORTED, "not an article: JSON data (application/json)"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml", BodyKind.UNSUPPORTED,
     "not an article: an SVG image (image/svg+xml)"),
    (b"<?xml version='1.0'?><rss></rss>", "application/rss+xml", BodyKind.UNSUPPORTED,
     "not an article: an RSS feed (application/rss+xml)"),
])
def test_bodies_that_are_not_articles_are_refused_with_what_they_are(body: bytes, label: str, kind: BodyKind,
                                                                     reason: str) -> None:
    sniffed = sniff(body, label)
    assert (sniffed.kind, sniffed.extractable, sniffed.reason) == (kind, False, reason)


@pytest.mark.parametrize(("body", "label", "kind"), [
    (PDF, "application/octet-stream", BodyKind.PDF),
    (PDF, "application/pdf", BodyKind.PDF),
    (b"\r\n" + PDF, "text/html", BodyKind.PDF),  # readers accept a header within the first KiB
    (HTML, "text/plain; charset=utf-8", BodyKind.HTML),
    (HTML, "", BodyKind.HTML),
    (HTML, "application/octet-stream", BodyKind.HTML),
    (b"\xef\xbb\xbf" + HTML, "text/html", BodyKind.HTML),
    ("<p>caf\u00e9</p>".encode("utf-16"), "text/html", BodyKind.HTML),  # NUL bytes, but a UTF-16 BOM
    (b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "application/xml",
     BodyKind.HTML),
    (b"<p>A fragment, labelled as HTML.</p>", "text/html", BodyKind.HTML),
    (b"# Notes\n\nPlain markdown.\n", "text/markdown", BodyKind.TEXT),
    (b"# Notes\n\nPlain markdown.\n", "application/octet-stream", BodyKind.TEXT),
    (README_WITH_HTML, "text/plain", BodyKind.TEXT),  # a README opening with a tag stays markdown
    (b"Just words, with one stray \x0c form feed.", "text/plain", BodyKind.TEXT),
])
def test_text_pdf_and_html_are_extracted_whatever_the_label(body: bytes, label: str, kind: BodyKind) -> None:
    sniffed = sniff(body, label)
    assert sniffed.kind == kind and sniffed.extractable, sniffed


def test_only_a_bounded_prefix_is_read() -> None:
    """An HTML page with binary junk after its first pages of text is still HTML (the extractor copes)."""
    body = HTML + b"<!--" + b"x" * 8192 + b"-->" + RANDOM_BINARY
    assert sniff(body, "text/html").kind is BodyKind.HTML


def outcome(state: LinkState, body: bytes, label: str, **facts: str) -> CrawlOutcome:
    return CrawlOutcome(state, "HTTP 200", body=FetchedBody("http://blog.test/x", label, body, False), **facts)


def test_the_fetch_stage_turns_a_binary_body_into_an_unsupported_link_without_its_body() -> None:
    refused = refuse_non_text(outcome(LinkState.OK, png_bytes(), "text/html"))
    assert refused.state is LinkState.UNSUPPORTED
    assert refused.reason == "not text: a PNG image (image/png) labelled text/html"
    assert refused.body is None
    assert refused.document == Document(title=None, text="", kind="unsupported", thin=True)


def test_an_archived_copy_goes_through_the_same_check_and_says_so() -> None:
    refused = refuse_non_text(outcome(LinkState.ARCHIVED, zip_bytes(), "application/zip",
                                      archived_url="http://archive.test/web/2015/x", archived_timestamp="2015"))
    assert refused.state is LinkState.UNSUPPORTED
    assert refused.reason == "not text: a ZIP archive (application/zip) (the web archive's copy of 2015)"
    assert refused.archived_url == "http://archive.test/web/2015/x"


def test_text_bodies_and_304s_pass_untouched() -> None:
    page = outcome(LinkState.REDIRECTED, HTML, "text/html")
    assert refuse_non_text(page) is page
    not_modified = CrawlOutcome(LinkState.OK, "not modified", not_modified=True)
    assert refuse_non_text(not_modified) is not_modified
