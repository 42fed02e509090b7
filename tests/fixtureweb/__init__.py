"""A local, deliberately faulty web of blog pages for linklens crawl tests and benchmarks.

``server.FixtureWeb`` serves it (raw asyncio HTTP/1.1, own thread); ``pages`` holds the article
model, loaders and templates; ``python -m tests.fixtureweb`` runs it in the foreground.

Hosts: ``n_hosts`` article hosts on 127.0.0.2, 127.0.0.3, ... (``first_ip`` moves the start),
each on an OS-chosen port, so every host has a different host name for per-host politeness;
then one "archive" host (fake Wayback Machine, list README, badges); the next address is a
bound-but-not-listening socket, so connecting to it is refused.

Faults (each is a link under ``## Faults`` in the list; ``FixtureWeb.faults()`` returns them):

=====================  ==============================  ============  =============================================
name                   path (host)                     state         behaviour
=====================  ==============================  ============  =============================================
not-found              /faults/missing-page            dead          404 every time, no archive snapshot
archived-404           /faults/moved-away              archived      404; the archive has a snapshot (article page)
gone                   /faults/gone                    dead          410 every time
redirect-chain         /faults/redirect-chain          redirected    301 -> hop-2 (relative Location) -> 302 ->
                                                                     hop-3 -> 307 -> an article on another host
redirect-loop          /faults/loop-a                  failed        302 to /faults/loop-b, which 302s back
flaky-503              /faults/flaky-503               ok            503 on the first request, then the article
retry-429              /faults/rate-limited            ok            429 + Retry-After: 1 first, then the article
slow                   /faults/slow                    failed        sleeps ``slow_s`` (30 s) before the headers
oversized              /faults/oversized               ok            article page + ~12 MB of HTML-comment padding
                                                                     (streamed); keep the truncated head
no-content-type        /faults/no-content-type         ok            HTML with no Content-Type header
wrong-content-type     /faults/text-plain              ok            HTML served as text/plain
latin1                 /faults/latin1                  ok            ISO-8859-1 bytes, charset in the header
cp1252                 /faults/cp1252-meta             ok            windows-1252 bytes, charset only in <meta>
gzip                   /faults/gzip                    ok            Content-Encoding: gzip (always)
pdf                    /papers/<slug>.pdf              ok            application/pdf (real PDF, text extractable)
blocked                /private/internal-notes (h0)    blocked       robots.txt of host 0 disallows /private/
reset                  /faults/reset                   failed        request read, then RST (SO_LINGER 0), always
refused                /faults/refused (closed port)   failed        connection refused (transient: tried again at
                                                                     the end of the crawl), no snapshot
video                  /watch?v=dQw4w9WgXcQ            ok            title + og:description only (thin document)
server-error           /faults/server-error            failed        500 every time, no snapshot
ftp                    ftp://<host0>/pub/...           unsupported   not HTTP
mailto                 mailto:maintainers@...          unsupported   not HTTP
=====================  ==============================  ============  =============================================

robots.txt: host 0 disallows /private/, host 1 answers 404 (no robots file: allow all), the
others allow everything. Only the archived-404 URL has a snapshot in the fake archive.

Content: with at least 11 articles the last 9 are reserved for the fault pages that carry an
article (archived-404 snapshot, redirect target, flaky-503, retry-429, oversized, both
content-type faults, gzip, pdf), so each article's text is at exactly one crawlable URL; with
fewer, those pages reuse listed articles. ``FixtureWeb.article_urls()`` maps slug -> URL and
``expected_content()`` maps listed URL -> article. The first listed article is listed again under
``## Editor's Picks`` (de-duplication). Intro and licence badges point at the archive host, so
nothing in the list leads off this machine; the list's ftp:// and mailto: items are faults.
"""

from .pages import (
    BOILERPLATE_MARKERS,
    CP1252_ARTICLE,
    DEFAULT_ARTICLES_PATH,
    LATIN1_ARTICLE,
    SAMPLE_ARTICLES,
    VIDEO_PAGE,
    FixtureArticle,
    load_fixture_articles,
    load_sysdesign_articles,
    markdown_to_paragraphs,
)
from .server import ARCHIVE_TIMESTAMP, CRAWL_DELAY_S, STATES, Fault, FixtureWeb, RequestRecord, normalize_url

__all__ = [
    "ARCHIVE_TIMESTAMP",
    "CRAWL_DELAY_S",
    "BOILERPLATE_MARKERS",
    "CP1252_ARTICLE",
    "DEFAULT_ARTICLES_PATH",
    "LATIN1_ARTICLE",
    "SAMPLE_ARTICLES",
    "STATES",
    "VIDEO_PAGE",
    "Fault",
    "FixtureArticle",
    "FixtureWeb",
    "RequestRecord",
    "load_fixture_articles",
    "load_sysdesign_articles",
    "markdown_to_paragraphs",
    "normalize_url",
]
