"""Turn a fetched body into a Document: main text plus metadata, boilerplate left out.

Extraction is CPU-bound (lxml, trafilatura, pypdf), so the crawler runs
`extract_document` in worker processes; it therefore takes and returns plain,
picklable values and touches no shared state.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import replace
from html import unescape

import trafilatura
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from ingest.decode import decode_text, undecodable_reason
from ingest.models import Document, FetchedBody
from ingest.sniff import BodyKind, sniff
from ingest.textform import nfc, word_count
from ingest.urls import host_of

logger = logging.getLogger(__name__)

# Below this many words a page is "thin": we keep the list's own title so the link stays searchable.
THIN_WORDS = 40
# A page that declares itself video or audio (og:type) keeps its article when it has one of at least
# this many words; shorter, it is a player and its title and description are its text.
MEDIA_ARTICLE_WORDS = THIN_WORDS
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


def extract_document(body: FetchedBody, fallback_title: str, *, include_comments: bool = False) -> Document:
    """Best text we can get from `body`; never raises for bad content, flags it thin instead.

    What the body is comes from `sniff` (bytes first, label second), so a PNG labelled
    text/html yields an empty document rather than junk text; the crawler refuses such
    bodies before they get here. Every text field comes out NFC-normalised (`ingest.textform`).
    Text that did not decode (too many U+FFFD, see `ingest.decode`) comes back with `failure`
    set, and the crawl ends the link `failed` with it. `include_comments` keeps reader comments
    (`LINKLENS_INCLUDE_COMMENTS`).
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
        elif _on_media_host(body.url):
            doc = _extract_media(text)
        else:
            doc = _extract_html(text, body.url, include_comments)
            if _declares_media(text):
                doc = _with_media(doc, text)
    doc = _in_text_form(_mark_thin(doc, fallback_title))
    doc.failure = undecodable_reason(f"{doc.title or ''}\n{doc.text}")
    return doc


def _on_media_host(url: str) -> bool:
    """Known video and slide hosts: their pages are players, whatever else they hold."""
    host = host_of(url)
    return any(host == h or host.endswith("." + h) for h in MEDIA_HOSTS)


def _declares_media(html: str) -> bool:
    """A page whose og:type says video.* or audio.* (music.* is audio too)."""
    og_type = (_meta(html[:50_000], "og:type") or "").lower()
    return og_type.startswith(("video", "audio", "music"))


def _with_media(article: Document, html: str) -> Document:
    """A media page: its article if it has a substantial one, plus the description; else the player's card.

    Why not always the card: news articles and show notes carry a trailer or an episode, and the
    article is what a search should find (issue 15: 138 words cut to 23).
    """
    if word_count(article.text) < MEDIA_ARTICLE_WORDS:
        return _extract_media(html)
    _, description = _head_metadata(html)
    description = description or article.description
    if description and " ".join(description.split()) not in " ".join(article.text.split()):
        return replace(article, text=f"{description}\n\n{article.text}", description=description)
    return article


def _extract_html(html: str, url: str, include_comments: bool = False) -> Document:
    # No `deduplicate`: trafilatura checks segments against a cache that lives in the worker process,
    # so a page's text would depend on which pages that worker happened to extract before (and a
    # page extracted twice would lose its repeated parts): not idempotent, and two engines disagree.
    result = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=include_comments,
        include_tables=True,
        deduplicate=False,
    )
    if result is None:
        title, description = _head_metadata(html)
        return Document(title=title, text=description or "", kind="html", description=description)
    data = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    text = (data.get("text") or "").strip()
    comments = (data.get("comments") or "").strip() if include_comments else ""
    return Document(
        title=data.get("title"),
        text=f"{text}\n\n{comments}" if text and comments else text or comments,
        kind="html",
        author=data.get("author"),
        date=data.get("date"),
        sitename=data.get("sitename"),
        language=data.get("language"),
        description=data.get("description"),
    )


def _in_text_form(doc: Document) -> Document:
    """Every text field in NFC: `bare_extraction` does not normalise (trafilatura's `extract()` does)."""
    return replace(doc, title=_nfc_or_none(doc.title), text=nfc(doc.text), author=_nfc_or_none(doc.author),
                   sitename=_nfc_or_none(doc.sitename), description=_nfc_or_none(doc.description))


def _nfc_or_none(value: str | None) -> str | None:
    return None if value is None else nfc(value)


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
    if word_count(doc.text) >= THIN_WORDS:
        if not doc.title:
            doc.title = fallback_title
        return doc
    doc.thin = True
    doc.title = doc.title or fallback_title
    if doc.description and word_count(doc.description) > word_count(doc.text):
        doc.text = doc.description
    if doc.kind == "html":
        doc.kind = "thin"
    return doc
