"""What a fetched body really is, decided from its bytes as well as its Content-Type label.

Servers lie: PNGs arrive labelled `text/html`, articles as `application/octet-stream`,
HTML as `text/plain`. Only three kinds are worth extracting — HTML/XHTML, plain
text (markdown included) and PDF — and anything else must never reach the index
as "text". The decision, in order (after Scrapy's `responsetypes`, which also
trusts the body over the header, and the WHATWG MIME Sniffing standard):

1. no bytes at all: nothing to extract;
2. a known binary signature (the `filetype` library's magic numbers; PDF also
   anywhere in the first KiB, as readers allow): PDF is extracted, the rest refused;
3. binary bytes (WHATWG's "binary data byte" set) in the first few KiB: refused;
4. text: HTML if the bytes open like HTML (a text/plain label needs a doctype or an
   `<html>` tag, since READMEs open with `<p align=...>`) or the label says HTML;
   refused if the label names a non-article text type (JSON, XML, CSS, scripts,
   feeds, images such as SVG); plain text otherwise.

Only a bounded prefix is read, so this costs microseconds even on a 10 MB body and
runs on the crawler's event loop.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from enum import StrEnum

import filetype
from filetype.types import AUDIO, DOCUMENT, FONT, IMAGE, VIDEO

from ingest.models import CrawlOutcome, Document, LinkState

logger = logging.getLogger(__name__)

# WHATWG MIME Sniffing: the "resource header" is at most 1445 bytes; we read a little more
# so a long <head> comment or whitespace does not hide the first tag.
SNIFF_BYTES = 4096
PDF_MAGIC = b"%PDF-"
PDF_MAGIC_WINDOW_BYTES = 1024
# Share of WHATWG binary data bytes above which a body is binary. Real binary (compressed or
# media data) has ~10%; a text page with one stray control character stays far below.
BINARY_SHARE = 0.01
_BINARY_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
_UTF_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")
# WHATWG "identifying a resource with an unknown MIME type": the tags that mark HTML.
_HTML_OPENING = re.compile(
    rb"\s*(?:<!--.*?-->\s*)*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"<(?:!doctype\s+html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)
# Stronger evidence, for bodies labelled text/plain or markdown.
_HTML_DOCUMENT_OPENING = re.compile(
    rb"\s*(?:<!--.*?-->\s*)*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]",
    re.IGNORECASE | re.DOTALL,
)
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PLAIN_TEXT_LABELS = frozenset({"text/plain", "text/markdown", "text/x-markdown"})
# Labels under which a text body is data or code, not an article.
_NOT_ARTICLE_WORDS = {
    "application/json": "JSON data",
    "text/json": "JSON data",
    "application/ld+json": "JSON data",
    "application/xml": "an XML document",
    "text/xml": "an XML document",
    "application/rss+xml": "an RSS feed",
    "application/atom+xml": "an Atom feed",
    "application/feed+json": "a JSON feed",
    "text/css": "a style sheet",
    "text/javascript": "a script",
    "application/javascript": "a script",
    "application/x-javascript": "a script",
    "text/csv": "a CSV table",
    "text/calendar": "a calendar",
    "image/svg+xml": "an SVG image",
}
# Top-level types whose label alone rules a text body out (an SVG, a subtitle track, ...).
_NOT_ARTICLE_TOP_LEVELS = {"image": "an image", "audio": "audio", "video": "a video", "font": "a font",
                           "model": "a 3D model"}
_GROUP_NOUNS = ((IMAGE, "image"), (VIDEO, "video"), (AUDIO, "audio file"), (FONT, "font"), (DOCUMENT, "document"))
# filetype files these under "archive"
_PROGRAMS = frozenset({"exe", "elf", "wasm", "swf", "nes", "crx"})
_DOCUMENTS = frozenset({"rtf", "ps", "sqlite"})


class BodyKind(StrEnum):
    """What the extractor does with a body; UNSUPPORTED bodies are never extracted."""

    HTML = "html"
    TEXT = "text"
    PDF = "pdf"
    UNSUPPORTED = "unsupported"


class Refusal(StrEnum):
    """Why a body is not extracted: the first words of the link's reason."""

    EMPTY = "nothing to index"
    BINARY = "not text"
    NOT_AN_ARTICLE = "not an article"


@dataclass(frozen=True)
class Sniffed:
    """The verdict on one body: its kind, and for refused bodies why, in words."""

    kind: BodyKind
    mime: str  # detected type; the label's essence when the body gave no better answer; "" for no bytes
    words: str  # "a PNG image", "plain text", ...
    label: str  # the Content-Type essence the server sent ("" when none)
    refusal: Refusal | None = None

    @property
    def extractable(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> str:
        """One sentence for the link report: what the body is and, if it differs, what it claimed to be.

        e.g. "not text: a PNG image (image/png) labelled text/html".
        """
        what = f"{self.words} ({self.mime})" if self.mime else self.words
        if not self.label:
            what += " with no Content-Type"
        elif self.label != self.mime:
            what += f" labelled {self.label}"
        return f"{self.refusal or 'extractable'}: {what}"


def mime_essence(content_type: str) -> str:
    """`text/HTML; charset=x` -> `text/html`: the part of a Content-Type that names the type."""
    return content_type.split(";", 1)[0].strip().lower()


def sniff(body: bytes, content_type: str) -> Sniffed:
    """Decide what `body` is; see the module docstring for the rules and their order."""
    label = mime_essence(content_type)
    head = body[:SNIFF_BYTES]
    if not head.strip():
        return Sniffed(BodyKind.UNSUPPORTED, "", "an empty body", label, Refusal.EMPTY)
    if PDF_MAGIC in head[:PDF_MAGIC_WINDOW_BYTES]:
        return Sniffed(BodyKind.PDF, "application/pdf", "a PDF document", label)
    if not head.startswith(_UTF_BOMS):
        share = _binary_share(head)
        # Markup with no binary byte at all cannot carry a binary signature: skip the ~40 us of matchers.
        if share > 0 or head.lstrip()[:1] != b"<":
            known = filetype.guess(head)
            if known is not None:
                return Sniffed(BodyKind.UNSUPPORTED, known.mime, _binary_words(known), label, Refusal.BINARY)
        if share > BINARY_SHARE:
            return Sniffed(BodyKind.UNSUPPORTED, "application/octet-stream", "unrecognised binary data", label,
                           Refusal.BINARY)
    text_head = _without_bom(head)
    html_evidence = _HTML_DOCUMENT_OPENING if label in PLAIN_TEXT_LABELS else _HTML_OPENING
    if label in HTML_TYPES or html_evidence.match(text_head):
        return Sniffed(BodyKind.HTML, label if label in HTML_TYPES else "text/html", "an HTML page", label)
    refused = _NOT_ARTICLE_WORDS.get(label) or _NOT_ARTICLE_TOP_LEVELS.get(label.split("/", 1)[0])
    if refused is None and label.endswith(("+xml", "+json")):
        refused = "structured data"
    if refused is not None:
        return Sniffed(BodyKind.UNSUPPORTED, label, refused, label, Refusal.NOT_AN_ARTICLE)
    return Sniffed(BodyKind.TEXT, label if label in PLAIN_TEXT_LABELS else "text/plain", "plain text", label)


def _binary_share(head: bytes) -> float:
    return (len(head) - len(head.translate(None, _BINARY_BYTES))) / len(head)


def _without_bom(head: bytes) -> bytes:
    for bom in _UTF_BOMS:
        if head.startswith(bom):
            return head[len(bom):]
    return head


def _binary_words(kind: filetype.Type) -> str:
    """'a PNG image', 'a ZIP archive', 'an MP4 video': filetype's own grouping of its matchers names the noun."""
    extension = kind.extension.lower()
    noun = next((noun for group, noun in _GROUP_NOUNS if kind in group), None)
    if noun is None:
        noun = "program" if extension in _PROGRAMS else "document" if extension in _DOCUMENTS else "archive"
    name = extension.upper()
    return f"{_article(name)} {name} {noun}"


def _article(spelled: str) -> str:
    """'an' before names read letter by letter from a vowel sound (MP4, EXE), 'a' otherwise (ZIP, PNG)."""
    first, second = spelled[0], spelled[1:2]
    if first in "AEIOU":
        return "an"
    read_as_letters = bool(second) and second not in "AEIOU"
    return "an" if first in "FHLMNRSX" and read_as_letters else "a"


def refuse_non_text(outcome: CrawlOutcome) -> CrawlOutcome:
    """The fetch stage's check: a body not worth extracting ends its link UNSUPPORTED, before extraction.

    The reason names what the body is; the body is not kept, and the document is empty, so
    no junk from this or an earlier crawl is indexed and only the list's title card remains.
    An archived copy is judged the same way as a live page.
    """
    body = outcome.body
    if body is None or outcome.not_modified:
        return outcome
    sniffed = sniff(body.body, body.content_type)
    if sniffed.extractable:
        return outcome
    reason = sniffed.reason
    if outcome.state is LinkState.ARCHIVED:
        reason += f" (the web archive's copy of {outcome.archived_timestamp})"
    elif outcome.state is LinkState.REDIRECTED:
        reason += f" (at {outcome.final_url})"
    logger.info("not extracted: %s: %s", body.url, reason)
    return replace(outcome, state=LinkState.UNSUPPORTED, reason=reason, body=None, compressed_body=None,
                   document=Document(title=None, text="", kind=BodyKind.UNSUPPORTED.value, thin=True))
