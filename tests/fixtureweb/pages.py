"""Content of the fixture web: the article model, its loaders, and the HTML/PDF/markdown templates.

Pages imitate a real blog (navigation, cookie banner, sidebar, comments, footer) so that
extraction tests exercise boilerplate removal. Every boilerplate block carries words listed in
``BOILERPLATE_MARKERS``, nonsense words that never occur in article text, so a test can assert
``marker not in extracted_text`` without false positives.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ARTICLES_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "articles.json"
SITE_NAME = "ZORBLAX Engineering Blog"

#: Strings found only in page boilerplate (nav, cookie banner, sidebar, comments, footer,
#: archive toolbar). None of them may survive extraction of an article page.
BOILERPLATE_MARKERS: tuple[str, ...] = (
    "ZORBLAX",
    "cookie preferences",
    "Comment by",
    "Quibblewick",
    "Fentwhistle",
    "Wayback Fixture Toolbar",
)


@dataclass(frozen=True)
class FixtureArticle:
    """One article of the fixture web; ``paragraphs`` are the exact texts an extractor should find."""

    slug: str
    title: str
    section: str
    subsection: str | None
    author: str
    date: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        """The article body as plain text, paragraphs separated by blank lines."""
        return "\n\n".join(self.paragraphs)


def _article_from_dict(d: dict[str, Any]) -> FixtureArticle:
    return FixtureArticle(
        slug=str(d["slug"]),
        title=str(d["title"]),
        section=str(d["section"]),
        subsection=d.get("subsection") or None,
        author=str(d.get("author") or "Anonymous"),
        date=str(d.get("date") or "2021-01-01"),
        paragraphs=tuple(str(p) for p in d["paragraphs"]),
    )


_SAMPLES: list[dict[str, Any]] = [
    {
        "slug": "consistent-hashing-rings",
        "title": "Consistent Hashing Rings Explained",
        "section": "Scalability",
        "subsection": None,
        "author": "Ada Lindqvist",
        "date": "2019-03-14",
        "paragraphs": [
            "Consistent hashing places both servers and keys on a circular ring so that adding a "
            "node only moves the keys between the new node and its predecessor on the ring.",
            "Virtual nodes smooth the distribution: each physical server owns dozens of points on "
            "the ring, which keeps the load within a few percent of the mean even with few servers.",
            "Rendezvous hashing is an alternative that scores every server for every key and picks "
            "the highest score; it needs no ring at all but costs a little more computation per lookup.",
        ],
    },
    {
        "slug": "leader-follower-replication",
        "title": "Leader and Follower Replication in Practice",
        "section": "Databases",
        "subsection": "Replication",
        "author": "Bartholomew Okafor",
        "date": "2020-07-02",
        "paragraphs": [
            "In leader and follower replication every write goes to a single leader which ships its "
            "write-ahead log to followers, and reads may be served by any replica.",
            "Asynchronous followers lag behind the leader, so a client can read its own write from the "
            "leader but miss it on a follower; sticky sessions hide most of this replication lag.",
            "Failover promotes the most up-to-date follower, and fencing tokens stop the deposed leader "
            "from accepting writes after a network partition heals.",
        ],
    },
    {
        "slug": "backpressure-in-queues",
        "title": "Backpressure in Message Queues",
        "section": "Queues",
        "subsection": None,
        "author": "Chiara Moretti",
        "date": "2021-11-20",
        "paragraphs": [
            "Backpressure lets a slow consumer tell a fast producer to wait, instead of letting an "
            "unbounded queue grow until the broker runs out of memory.",
            "Bounded buffers, credit-based flow control and token buckets are the three classic "
            "mechanisms, and each trades latency for throughput differently.",
            "When the queue is full the producer can block, drop the newest message, or shed load "
            "upstream with an explicit error that callers retry with jitter.",
        ],
    },
]
SAMPLE_ARTICLES: tuple[FixtureArticle, ...] = tuple(_article_from_dict(d) for d in _SAMPLES)

#: Served ISO-8859-1 encoded (declared in the Content-Type header).
LATIN1_ARTICLE = FixtureArticle(
    slug="cafe-naive-caching",
    title="Café Notes on Naïve Caching",
    section="Faults",
    subsection=None,
    author="Renée Dubois",
    date="2018-05-09",
    paragraphs=(
        "At the café near the office we sketched a naïve cache on a napkin: a façade in front of "
        "the database that remembered every answer forever.",
        "The naïve design worked until the crème brûlée menu changed and stale prices stayed on "
        "screen for a week, which taught us about expiry the hard way.",
        "Our résumé of the lesson from Zürich: every cached entry needs an owner, a time to live, "
        "and a déjà vu test that proves invalidation really happens.",
    ),
)

#: Served windows-1252 encoded, declared only in a <meta charset> (header has no charset).
#: Uses characters that exist in windows-1252 but not ISO-8859-1 (euro sign, curly quotes, dashes).
CP1252_ARTICLE = FixtureArticle(
    slug="euro-cost-of-retries",
    title="The €1,000 Cost of Naïve Retries",
    section="Faults",
    subsection=None,
    author="Søren Håkansson",
    date="2018-09-30",
    paragraphs=(
        "A naïve retry loop cost us €1,000 in a single night — every client hammered the "
        "recovering service at the same instant.",
        "We call it the “thundering herd”: identical timers, identical backoff, and one café "
        "full of engineers watching the graphs climb.",
        "Jittered exponential backoff and a retry budget per client fixed it; the façade of "
        "reliability had hidden a coördination problem all along.",
    ),
)

#: A video page: only <title> and og:description carry text ("thin" document).
VIDEO_PAGE = FixtureArticle(
    slug="watch",
    title="Scaling Fixture Streams to a Billion Viewers - FixTube",
    section="Faults",
    subsection=None,
    author="FixTube Conferences",
    date="2017-06-01",
    paragraphs=(
        "Talk recording: how a streaming platform shards live video ingest across regions, "
        "with edge caches and adaptive bitrate ladders.",
    ),
)


def load_fixture_articles(path: str | Path | None = None) -> list[FixtureArticle]:
    """Load the test corpus (``tests/fixtures/articles.json`` by default).

    While that file is still being written the default falls back to ``SAMPLE_ARTICLES``
    with a warning, so the fixture web stays usable; an explicit ``path`` must exist.
    """
    p = Path(path) if path is not None else DEFAULT_ARTICLES_PATH
    if path is None and not p.exists():
        warnings.warn(f"{p} missing; using the 3 built-in sample articles", RuntimeWarning, stacklevel=2)
        return list(SAMPLE_ARTICLES)
    data = json.loads(p.read_text(encoding="utf-8"))
    return [_article_from_dict(d) for d in data]


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_BULLET = re.compile(r"^\s*(?:[*+-]|\d+[.)])\s+")


def markdown_to_paragraphs(text: str) -> tuple[str, ...]:
    """Split markdown into paragraph strings: blank-line blocks, heading marks and bullets removed.

    Good enough for benchmark pages; multi-line blocks (lists, code) keep their line breaks so
    the renderer can show them as lists or preformatted text.
    """
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [ln for ln in block.split("\n") if ln.strip() and not ln.strip().startswith("```")]
        if not lines:
            continue
        lines = [_BULLET.sub("", _HEADING.sub("", ln)).rstrip() for ln in lines]
        out.append("\n".join(ln.strip() for ln in lines))
    return tuple(p for p in out if p)


def load_sysdesign_articles(path: str | Path) -> list[FixtureArticle]:
    """Load the benchmark corpus (JSON Lines with id, title, section, text) without copying it anywhere."""
    arts: list[FixtureArticle] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            r = json.loads(line)
            repo = re.sub(r"^https?://[^/]+/", "", str(r.get("source_repo") or "")).strip("/")
            author = repo.split("/")[0] if repo else "Unknown"  # repository owner
            arts.append(
                FixtureArticle(
                    slug=re.sub(r"[^a-z0-9-]+", "-", str(r["id"]).lower()).strip("-"),
                    title=str(r["title"]),
                    section=str(r["section"]),
                    subsection=None,
                    author=author,
                    date=f"20{10 + i % 14:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    paragraphs=markdown_to_paragraphs(str(r["text"])),
                )
            )
    return arts


# ---------------------------------------------------------------------------------------------
# HTML templates
# ---------------------------------------------------------------------------------------------

_NAV_ITEMS = [
    ("/", "Home"), ("/archive", "Archive"), ("/tags/architecture", "Architecture"),
    ("/tags/databases", "Databases"), ("/tags/devops", "DevOps"), ("/tags/frontend", "Frontend"),
    ("/tags/security", "Security"), ("/tags/career", "Career"), ("/podcast", "Podcast"),
    ("/talks", "Talks"), ("/jobs", "Jobs"), ("/about", "About"), ("/contact", "Contact"),
    ("/newsletter", "ZORBLAX newsletter"), ("/rss.xml", "RSS"),
]
_COMMENTS = [
    ("Fentwhistle Marbleton", "Brilliant ZORBLAX write-up, I shared it with my Quibblewick reading group."),
    ("Ozzlewick Prunt", "Fentwhistle here agrees: would love a follow-up ZORBLAX post with benchmarks."),
    ("Glimmerby Snook", "Bookmarked for the next Quibblewick meetup, thanks for the ZORBLAX tips!"),
]
_RELATED = [
    "Quibblewick Weekly: ten ZORBLAX productivity rituals",
    "Why our Quibblewick team switched editors twice",
    "ZORBLAX retro: the year in Quibblewick hackathons",
    "Quibblewick office tour and ZORBLAX coffee rankings",
]
_CSS = "body{font-family:sans-serif;margin:0}nav a{margin:0 .4em}.cookie-banner{position:fixed;bottom:0}"
_ANALYTICS_JS = "window.zorblaxAnalytics=window.zorblaxAnalytics||[];zorblaxAnalytics.push(['pageview']);"


def _e(s: str) -> str:
    return html.escape(s, quote=True)


def _paragraph_html(p: str) -> str:
    if "\n" in p:  # multi-line blocks from markdown: keep one item per line
        return "<ul>" + "".join(f"<li>{_e(ln)}</li>" for ln in p.split("\n")) + "</ul>"
    return f"<p>{_e(p)}</p>"


def _digest(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode()).digest()[:4], "big")


def nav_html() -> str:
    links = "".join(f'<li><a href="{href}">{_e(label)}</a></li>' for href, label in _NAV_ITEMS)
    return (
        f'<header class="site-header"><a class="logo" href="/">{SITE_NAME}</a>'
        f'<nav class="main-nav" aria-label="ZORBLAX menu"><ul>{links}</ul></nav></header>'
    )


def cookie_banner_html() -> str:
    return (
        '<div id="cookie-consent" class="cookie-banner" role="dialog">'
        "<p>ZORBLAX uses cookies to remember your cookie preferences and measure readership. "
        'Manage your cookie preferences in the <a href="/privacy">ZORBLAX privacy centre</a>.</p>'
        '<button class="accept">Accept all ZORBLAX cookies</button><button>Reject</button></div>'
    )


def sidebar_html(related_urls: Sequence[str]) -> str:
    items = "".join(
        f'<li><a href="{_e(u)}">{_e(_RELATED[i % len(_RELATED)])}</a></li>' for i, u in enumerate(related_urls)
    )
    return (
        '<aside class="sidebar widget-area"><section class="widget related-posts">'
        f"<h3>Related Quibblewick posts</h3><ul>{items}</ul></section>"
        '<section class="widget newsletter"><h3>Subscribe</h3><p>Get the ZORBLAX newsletter every '
        'Friday: Quibblewick picks, no spam.</p><form><input type="email"><button>Join ZORBLAX</button></form>'
        '</section><section class="widget tags"><h3>Quibblewick tag cloud</h3><p>'
        '<a href="/tags/zorblax">zorblax</a> <a href="/tags/quibblewick">quibblewick</a></p></section></aside>'
    )


def comments_html(seed: str) -> str:
    n = 2 + _digest(seed) % 2
    lis = "".join(
        f'<li class="comment"><p class="comment-meta">Comment by <span class="comment-author">{_e(name)}</span>'
        f'</p><div class="comment-content"><p>{_e(body)}</p></div></li>'
        for name, body in _COMMENTS[:n]
    )
    return (
        f'<section id="comments" class="comments-area"><h2 class="comments-title">{n} ZORBLAX comments</h2>'
        f'<ol class="comment-list">{lis}</ol><div id="respond" class="comment-respond">'
        "<h3>Leave a Quibblewick reply</h3><form><textarea></textarea><button>Post Comment</button></form>"
        "</div></section>"
    )


def footer_html() -> str:
    return (
        '<footer class="site-footer"><p>© 2024 ZORBLAX Media Group. All rights reserved. '
        '<a href="/privacy">Privacy</a> · <a href="/terms">Terms</a> · '
        '<a href="/cookies">ZORBLAX cookie preferences</a></p></footer>'
    )


def render_article_page(
    article: FixtureArticle,
    url: str,
    related_urls: Sequence[str] = (),
    charset: str = "utf-8",
) -> str:
    """A complete blog page around ``article``; the only real content is inside <article>."""
    first = article.paragraphs[0] if article.paragraphs else article.title
    desc = first[:155].rsplit(" ", 1)[0] if len(first) > 155 else first
    body = "".join(_paragraph_html(p) for p in article.paragraphs)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="{charset}">\n'
        f"<title>{_e(article.title)}</title>\n"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="description" content="{_e(desc)}">\n'
        f'<meta name="author" content="{_e(article.author)}">\n'
        f'<meta property="og:title" content="{_e(article.title)}">\n'
        f'<meta property="og:type" content="article">\n'
        f'<meta property="og:url" content="{_e(url)}">\n'
        f'<meta property="og:site_name" content="{SITE_NAME}">\n'
        f'<meta property="article:published_time" content="{_e(article.date)}T08:00:00Z">\n'
        f'<meta property="article:section" content="{_e(article.section)}">\n'
        f'<link rel="canonical" href="{_e(url)}">\n<style>{_CSS}</style>\n'
        f"<script>{_ANALYTICS_JS}</script>\n</head>\n"
        f'<body class="post-template">\n{cookie_banner_html()}\n{nav_html()}\n'
        f'<div class="page-wrap"><main id="main" class="site-main">\n'
        f"<article>\n<h1>{_e(article.title)}</h1>\n{body}\n</article>\n"
        f"{comments_html(article.slug)}\n</main>\n{sidebar_html(related_urls)}\n</div>\n"
        f"{footer_html()}\n</body>\n</html>\n"
    )


def render_video_page(video: FixtureArticle, url: str) -> str:
    """A video-site page: metadata only, the 'content' is a script-driven player."""
    desc = video.paragraphs[0]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(video.title)}</title>"
        f'<meta name="description" content="{_e(desc)}">'
        f'<meta property="og:title" content="{_e(video.title)}">'
        f'<meta property="og:description" content="{_e(desc)}">'
        f'<meta property="og:type" content="video.other"><meta property="og:url" content="{_e(url)}">'
        "<script>var ytInitialPlayerResponse={\"playabilityStatus\":{\"status\":\"OK\"}};</script>"
        '</head><body><div id="player" data-video-id="dQw4w9WgXcQ"></div>'
        "<script>document.getElementById('player').textContent='';</script></body></html>\n"
    )


def render_simple_page(title: str, message: str) -> str:
    """Error and placeholder pages: short, with site chrome, no article."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title></head>'
        f"<body>{nav_html()}<main><h1>{_e(title)}</h1><p>{_e(message)}</p></main>{footer_html()}</body></html>\n"
    )


def render_index_page(posts: Iterable[tuple[str, str]]) -> str:
    """Home page of one host: the list of posts it serves (title, url)."""
    items = "".join(f'<li><a href="{_e(u)}">{_e(t)}</a></li>' for t, u in posts)
    return render_simple_page(SITE_NAME, "Latest posts").replace("</p></main>", f"</p><ul>{items}</ul></main>")


def wrap_with_toolbar(page: str, original_url: str, timestamp: str) -> str:
    """The archive's replay view: the page with a toolbar injected after <body>, as the Wayback Machine does."""
    bar = (
        '<div id="wm-ipp-base" class="wb-toolbar"><p>Wayback Fixture Toolbar: ZORBLAX Archive captured '
        f'<a href="{_e(original_url)}">{_e(original_url)}</a> on '
        f"{timestamp[:4]}-{timestamp[4:6]}-{timestamp[6:8]}.</p></div>"
    )
    m = re.search(r"<body[^>]*>", page)
    return page[: m.end()] + bar + page[m.end() :] if m else bar + page


def badge_svg(label: str) -> str:
    """A tiny SVG badge for the list's intro and licence links (served locally, never from the internet)."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="104" height="20"><rect width="104" height="20" fill="#fc60a8"/>'
        f'<text x="6" y="14" fill="#fff" font-size="11">{_e(label)}</text></svg>\n'
    )


# ---------------------------------------------------------------------------------------------
# PDF and markdown
# ---------------------------------------------------------------------------------------------

def _pdf_str(text: str) -> str:
    """A PDF literal string in WinAnsiEncoding (cp1252): escapes, non-ASCII bytes as octal."""
    out = []
    for b in text.encode("cp1252", "replace"):
        c = chr(b)
        out.append("\\" + c if c in "\\()" else c if 32 <= b < 127 else f"\\{b:03o}")
    return "(" + "".join(out) + ")"


def _pdf_utf16(text: str) -> str:
    """A PDF text string for metadata (Info dict uses PDFDocEncoding or UTF-16BE with a BOM)."""
    return "<FEFF" + text.encode("utf-16-be").hex().upper() + ">"


def build_pdf(article: FixtureArticle) -> bytes:
    """A real, minimal PDF of the article (title, then wrapped paragraphs) in standard Helvetica.

    Hand-written instead of fpdf2 because importing fpdf2 costs ~0.6 s, which would slow every
    FixtureWeb start-up; text uses WinAnsiEncoding so pypdf/pdfminer extract it as Unicode.
    """
    import textwrap

    lines: list[tuple[str, str]] = [("F2", ln) for ln in textwrap.wrap(article.title, 55)] + [("F1", "")]
    for p in article.paragraphs:
        lines += [("F1", ln) for ln in textwrap.wrap(" ".join(p.split()), 88)] + [("F1", "")]
    per_page = 50
    chunks = [lines[i : i + per_page] for i in range(0, len(lines), per_page)] or [[]]
    objs: list[str] = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",  # Pages, filled below
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        f"<< /Title {_pdf_utf16(article.title)} /Author {_pdf_utf16(article.author)} /Producer (fixtureweb) >>",
    ]
    kids = []
    for chunk in chunks:
        ops = ["BT", "14 TL", "56 790 Td"]
        for font, ln in chunk:
            ops.append(f"/{font} {16 if font == 'F2' else 11} Tf {_pdf_str(ln)} Tj T*")
        ops.append("ET")
        stream = "\n".join(ops)
        objs.append(f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {len(objs)} 0 R "
                    "/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def md_link_text(s: str) -> str:
    """Escape characters that would end a markdown link text early."""
    return s.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


ListItem = tuple[str, str]  # (link text, url)
ListSection = tuple[str, list[ListItem], list[tuple[str, list[ListItem]]]]  # (name, items, [(sub, items)])


def render_list_markdown(sections: Sequence[ListSection], badge_url: str, badge_link: str,
                         license_badge: str, license_url: str) -> str:
    """An awesome-list README: title, intro with badge, table of contents, sections, licence."""
    out = [
        "# Awesome Fixture",
        "",
        f"[![Awesome]({badge_url})]({badge_link})",
        "",
        "A curated list of engineering articles, talks and papers about building systems that scale,",
        "replicate and recover. Links are grouped by topic; every entry names its author.",
        "",
        "## Contents",
        "",
    ]
    for name, _items, subs in sections:
        out.append(f"- [{name}](#{github_anchor(name)})")
        out.extend(f"  - [{sub}](#{github_anchor(sub)})" for sub, _ in subs)
    out.append("- [License](#license)")
    for name, items, subs in sections:
        out += ["", f"## {name}"]
        out += [""] + [f"* [{md_link_text(t)}]({u})" for t, u in items] if items else []
        for sub, sub_items in subs:
            out += ["", f"### {sub}", ""]  # blank line before each subsection
            out.extend(f"* [{md_link_text(t)}]({u})" for t, u in sub_items)
    out += [
        "",
        "## License",
        "",
        f"[![CC0]({license_badge})]({license_url})",
        "",
        "To the extent possible under law, the contributors have waived all copyright to this list.",
        "",
    ]
    return "\n".join(out)
