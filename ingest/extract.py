"""Turn a fetched body into a Document: main text plus metadata, boilerplate left out.

Extraction is CPU-bound (lxml, trafilatura, pypdf), so the crawler runs
`extract_document` in worker processes; it therefore takes and returns plain,
picklable values and touches no shared state.
"""

from __future__ import annotations

import io
import logging
import re
from html import unescape

import trafilatura
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from ingest.decode import decode_text
from ingest.models import Document, FetchedBody
from ingest.sniff import BodyKind, sniff
from ingest.urls import host_of

logger = logging.getLogger(__name__)

# Below this many words a page is "thin": we keep the list's own title so the link stays searchable.
THIN_WORDS = 40
# Hosts whose pages are players or slide viewers: the article text is the title and description.
MEDIA_HOSTS = (
    "youtube.com",
    "youtu.be",
    "vimeo.com",
    "slideshare.net",
    "speakerdeck.com",
    "infoq.com",
    "dailymotion.com",
)
MAX_PDF_PAGES = 300
_META_CONTENT = r"""<meta[^>]+(?:property|name)=["']{name}["'][^>]*content=["']([^"']*)["']"""
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def extract_document(body: FetchedBody, fallback_title: str) -> Document:
    """Best text we can get from `body`; never raises for bad content, flags it thin instead.

    What the body is comes from `sniff` (bytes first, label second), so a PNG labelled
    text/html yields an empty document rather than junk text; the crawler refuses such
    bodies before they get here.
    """
    sniffed = sniff(body.body, body.content_type)
    if sniffed.kind is BodyKind.PDF:
        doc = _extract_pdf(body.body)
    elif sniffed.kind is BodyKind.UNSUPPORTED:
        doc = Document(title=None, text="", kind=BodyKind.UNSUPPORTED.value)
    else:
        text = decode_text(body.body, body.content_type, html=sniffed.kind is BodyKind.HTML).text
        if sniffed.kind is BodyKind.TEXT:
            doc = Document(title=None, text=text.strip(), kind="text")
        elif _is_media_page(body.url, text):
            doc = _extract_media(text)
        else:
            doc = _extract_html(text, body.url)
    return _mark_thin(doc, fallback_title)


def _is_media_page(url: str, html: str) -> bool:
    """Known video/slide hosts, or any page that declares itself a video (og:type video.*)."""
    host = host_of(url)
    if any(host == h or host.endswith("." + h) for h in MEDIA_HOSTS):
        return True
    og_type = _meta(html[:50_000], "og:type") or ""
    return og_type.lower().startswith("video")


def _extract_html(html: str, url: str) -> Document:
    # No `deduplicate`: trafilatura checks segments against a cache that lives in the worker process,
    # so a page's text would depend on which pages that worker happened to extract before (and a
    # page extracted twice would lose its repeated parts): not idempotent, and two engines disagree.
    result = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        deduplicate=False,
    )
    if result is None:
        title, description = _head_metadata(html)
        return Document(title=title, text=description or "", kind="html", description=description)
    data = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    return Document(
        title=data.get("title"),
        text=(data.get("text") or "").strip(),
        kind="html",
        author=data.get("author"),
        date=data.get("date"),
        sitename=data.get("sitename"),
        language=data.get("language"),
        description=data.get("description"),
    )


def _extract_media(html: str) -> Document:
    """Video and slide pages: only the title and description are worth keeping."""
    title, description = _head_metadata(html)
    return Document(title=title, text=description or "", kind="video", description=description)


def _head_metadata(html: str) -> tuple[str | None, str | None]:
    head = html[:200_000]
    title = _meta(head, "og:title")
    if not title:
        match = _TITLE.search(head)
        title = unescape(match.group(1)).strip() if match else None
    description = _meta(head, "og:description") or _meta(head, "description")
    return title or None, description or None


def _meta(html: str, name: str) -> str | None:
    match = re.search(_META_CONTENT.format(name=re.escape(name)), html, re.IGNORECASE)
    return unescape(match.group(1)).strip() if match else None


def _extract_pdf(raw: bytes) -> Document:
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
        info = reader.metadata
        title = (info.title if info else None) or None
        author = (info.author if info else None) or None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        # A truncated or broken PDF is common on the web; keep the link, say why in the log.
        logger.info("unreadable PDF: %s", exc)
        return Document(title=None, text="", kind="pdf")
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    return Document(title=title, text=text, kind="pdf", author=author)


def _mark_thin(doc: Document, fallback_title: str) -> Document:
    if len(doc.text.split()) >= THIN_WORDS:
        if not doc.title:
            doc.title = fallback_title
        return doc
    doc.thin = True
    doc.title = doc.title or fallback_title
    if doc.description and len(doc.description.split()) > len(doc.text.split()):
        doc.text = doc.description
    if doc.kind == "html":
        doc.kind = "thin"
    return doc
