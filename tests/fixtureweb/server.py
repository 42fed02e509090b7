"""FixtureWeb: a small, misbehaving web on loopback for crawler tests and benchmarks.

It is a raw ``asyncio.start_server`` HTTP/1.1 server (not a framework) because the faults need
socket-level control: resetting a connection with SO_LINGER 0, stalling before the headers,
streaming a 12 MB body lazily. It runs on its own event loop in a background thread, so
synchronous tests and pytest-asyncio tests (whose loop runs the crawler) can both use it.

The hosts, the fault table and the expected crawl states are documented in the package
docstring (``tests/fixtureweb/__init__.py``); ``FixtureWeb.faults()`` lists them at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import http
import inspect
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import pages
from .pages import FixtureArticle

ARCHIVE_TIMESTAMP = "20150101000000"
#: host 0's robots.txt asks for this many seconds between requests
CRAWL_DELAY_S = 0.2
LAST_MODIFIED = "Wed, 01 Jan 2020 00:00:00 GMT"  # of every 200 page; If-Modified-Since >= it gives a 304
STATES = ("ok", "redirected", "archived", "dead", "blocked", "unsupported", "failed")
_SPECIAL_SLOTS = ("archived-404", "redirect-target", "flaky-503", "retry-429", "oversized",
                  "no-content-type", "wrong-content-type", "gzip", "pdf")


@dataclass
class Request:
    """One parsed request; ``netloc`` is the listening ip:port it arrived on (not the Host header)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    netloc: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def url(self) -> str:
        return f"http://{self.netloc}{self.target}"


@dataclass
class Response:
    """What a handler returns; ``stream``+``length`` for lazily generated bodies, ``reset`` for an RST."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    length: int = 0
    close: bool = False
    reset: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One served request, for politeness/ordering assertions (times are ``time.monotonic()``)."""

    url: str
    method: str
    status: int | None
    started: float
    finished: float
    user_agent: str = ""


@dataclass(frozen=True)
class Fault:
    """One fault link: where it is, what the crawler should conclude, and whose text it carries."""

    name: str
    url: str
    state: str
    description: str
    article: FixtureArticle | None = None


#: Route handlers may be sync (most) or async (those that sleep); the dispatcher awaits as needed.
Handler = Callable[[Request], Response | Awaitable[Response]]


def normalize_url(url: str) -> str:
    """Key used for hit counting and snapshots: scheme-less-insensitive, fragment dropped, '/' for empty path."""
    s = urlsplit(url if "://" in url else "http://" + url)
    return f"http://{s.netloc.lower()}{s.path or '/'}" + (f"?{s.query}" if s.query else "")


def _html(page: str, status: int = 200, charset: str = "utf-8") -> Response:
    return Response(status, page.encode(charset), f"text/html; charset={charset}")


def _const(resp: Response) -> Handler:
    """A handler that always answers the same (pre-rendered) response."""
    return lambda req: resp


def _redirect(code: int, location: str) -> Handler:
    return _const(Response(code, b"", None, [("Location", location)]))


def _conditional(req: Request, resp: Response) -> Response:
    """Add validators (ETag = body hash, fixed Last-Modified) to whole 200 bodies and answer
    If-None-Match / If-Modified-Since with 304, so re-crawls can be tested for revalidation."""
    if resp.status != 200 or resp.stream is not None or resp.reset:
        return resp
    etag = '"' + hashlib.sha1(resp.body).hexdigest()[:20] + '"'
    validators = [("ETag", etag), ("Last-Modified", LAST_MODIFIED)]
    inm, ims = req.headers.get("if-none-match"), req.headers.get("if-modified-since")
    if inm is not None:  # If-Modified-Since is ignored when If-None-Match is present (RFC 9110)
        fresh = inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    else:
        try:
            fresh = ims is not None and parsedate_to_datetime(ims) >= parsedate_to_datetime(LAST_MODIFIED)
        except (TypeError, ValueError):
            fresh = False
    if fresh:
        return Response(304, b"", None, validators)
    return replace(resp, headers=[*resp.headers, *validators])


def _listen(ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 0))
    s.listen(512)
    s.setblocking(False)
    return s


class FixtureWeb:
    """The fixture web; use as ``with FixtureWeb(articles, n_hosts=4) as web:``.

    ``articles`` defaults to ``load_fixture_articles()``. If there are at least 11 articles, the
    last 9 are reserved for fault pages (archive snapshot, redirect target, 503/429 retries,
    oversized, content-type, gzip, PDF) so every article text lives at exactly one crawlable URL;
    with fewer, fault pages reuse listed articles. ``latency_s`` delays every article-host response.
    """

    def __init__(self, articles: Sequence[FixtureArticle] | None = None, n_hosts: int = 4,
                 latency_s: float = 0.0, *, slow_s: float = 30.0, oversize_bytes: int = 12 * 2**20,
                 first_ip: int = 2) -> None:
        self.articles = list(articles) if articles is not None else pages.load_fixture_articles()
        if not self.articles:
            raise ValueError("FixtureWeb needs at least one article")
        if n_hosts < 1 or first_ip < 1 or first_ip + n_hosts + 1 > 254:
            raise ValueError("hosts must fit in 127.0.0.<first_ip>..127.0.0.254")
        self.n_hosts, self.latency_s, self.slow_s = n_hosts, latency_s, slow_s
        self.oversize_bytes, self.first_ip = oversize_bytes, first_ip
        self.host_urls: list[str] = []
        self.archive_url = self.list_url = ""
        self._lock = threading.Lock()  # guards the counters below: read from test threads, written by the loop
        self._hits, self._attempts = Counter[str](), Counter[str]()
        self._inflight, self._peak = Counter[str](), Counter[str]()
        self._log: list[RequestRecord] = []
        self._routes: dict[tuple[str, str], Handler] = {}
        self._robots: dict[str, str | None] = {}
        self._snapshots: dict[str, tuple[str, str]] = {}
        self._expected: dict[str, str] = {}
        self._content: dict[str, FixtureArticle] = {}
        self._article_urls: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._list_md = ""
        self._socks: list[socket.socket] = []
        self._refused_sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._conn_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FixtureWeb:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind every socket synchronously (so URLs are known at once), then serve from a thread."""
        if self._thread is not None:
            raise RuntimeError("FixtureWeb already started")
        try:
            self._socks = [_listen(f"127.0.0.{self.first_ip + i}") for i in range(self.n_hosts + 1)]
            self._refused_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._refused_sock.bind((f"127.0.0.{self.first_ip + self.n_hosts + 1}", 0))  # never listen()
            urls = ["http://{}:{}".format(*s.getsockname()) for s in self._socks]
            self.host_urls, self.archive_url = urls[:-1], urls[-1]
            self.list_url = f"{self.archive_url}/awesome-fixture/README.md"
            self._build_site()
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=self._thread_main, name="fixtureweb", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError("FixtureWeb failed to start") from self._error

    def stop(self) -> None:
        """Cancel every connection (even a 30 s stall), close all sockets, join the thread. Idempotent."""
        thread, loop, ev = self._thread, self._loop, self._stop_event
        if thread is not None and loop is not None and ev is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(ev.set)
            thread.join(10)
        self._thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in [*self._socks, self._refused_sock]:
            if s is not None:
                s.close()
        self._socks, self._refused_sock = [], None

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        servers = [await asyncio.start_server(self._on_connection, sock=s) for s in self._socks]
        self._ready.set()
        await self._stop_event.wait()
        for srv in servers:
            srv.close()
        while self._conn_tasks:  # loop: a connection accepted during shutdown may register late
            tasks = list(self._conn_tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)
        for srv in servers:
            await srv.wait_closed()

    # -- public inspection -------------------------------------------------------------------

    def hits(self, url: str) -> int:
        """Requests received for this exact URL (query included, fragment ignored)."""
        with self._lock:
            return self._hits[normalize_url(url)]

    def total_hits(self, include_robots: bool = True) -> int:
        """Requests received on all hosts (archive included)."""
        with self._lock:
            return sum(n for u, n in self._hits.items() if include_robots or not u.endswith("/robots.txt"))

    def robots_hits(self, host_url: str | None = None) -> int:
        """robots.txt requests, on one host (``http://ip:port``) or all."""
        with self._lock:
            return sum(n for u, n in self._hits.items() if u.endswith("/robots.txt")
                       and (host_url is None or u.startswith(host_url.rstrip("/") + "/")))

    def request_log(self) -> list[RequestRecord]:
        """Every finished request in completion order (for timing/politeness checks)."""
        with self._lock:
            return list(self._log)

    def peak_concurrency(self, host_url: str) -> int:
        """Highest number of simultaneous in-flight requests seen by one host."""
        with self._lock:
            return self._peak[urlsplit(host_url).netloc]

    def reset_counters(self) -> None:
        """Forget hits, logs and per-URL fault attempts (503/429 fail once again afterwards)."""
        with self._lock:
            for c in (self._hits, self._attempts, self._peak):
                c.clear()
            self._log.clear()

    def expected_states(self) -> dict[str, str]:
        """URL (as written in the list) -> final LinkState value the crawler should reach."""
        return dict(self._expected)

    def expected_content(self) -> dict[str, FixtureArticle]:
        """URL (as listed) -> the article whose text extraction should yield, for ok/redirected/archived links."""
        return dict(self._content)

    def article_urls(self) -> dict[str, str]:
        """slug -> the URL serving that article (regular post, fault page, PDF or redirect target)."""
        return dict(self._article_urls)

    def faults(self) -> list[Fault]:
        return list(self._faults)

    def list_markdown(self) -> str:
        """The awesome-list README linking every article (one of them twice) and every fault."""
        return self._list_md

    def write_list_markdown(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self._list_md, encoding="utf-8")
        return p

    # -- site construction -------------------------------------------------------------------

    def _host(self, i: int) -> str:
        return self.host_urls[i % self.n_hosts]

    def _route(self, url: str, handler: Handler) -> None:
        s = urlsplit(url)
        self._routes[(s.netloc, s.path)] = handler

    def _page(self, article: FixtureArticle, url: str, charset: str = "utf-8") -> str:
        related = [self._article_urls[a.slug] for a in self.articles[:4] if a.slug in self._article_urls]
        return pages.render_article_page(article, url, related, charset)

    def _serve_article(self, article: FixtureArticle, url: str) -> Handler:
        return lambda req: _html(self._page(article, url))

    def _build_site(self) -> None:
        """Assign articles to hosts, register routes, faults, snapshots and write the list markdown."""
        arts, n_sp = self.articles, len(_SPECIAL_SLOTS)
        dedicated = len(arts) >= n_sp + 2
        regular = arts[:-n_sp] if dedicated else arts
        special = dict(zip(_SPECIAL_SLOTS, arts[-n_sp:] if dedicated else
                           [regular[i % len(regular)] for i in range(n_sp)], strict=True))
        posts: list[tuple[FixtureArticle, str]] = []
        seen: set[str] = set()
        for i, a in enumerate(regular):
            slug = a.slug if a.slug not in seen else f"{a.slug}-{i}"
            seen.add(slug)
            url = f"{self._host(i)}/posts/{slug}"
            posts.append((a, url))
            self._article_urls.setdefault(a.slug, url)
            self._route(url, self._serve_article(a, url))
            self._expected[url], self._content[url] = "ok", a
        for h, host in enumerate(self.host_urls):
            self._robots[urlsplit(host).netloc] = (f"User-agent: *\nCrawl-delay: {CRAWL_DELAY_S}\nDisallow: /private/\n"
                                                  if h == 0 else
                                                  None if h == 1 else "User-agent: *\nDisallow:\n")
            mine = [(a.title, u) for a, u in posts if u.startswith(host + "/")]
            self._route(host + "/", _const(_html(pages.render_index_page(mine))))
        self._build_faults(special, dedicated)
        self._build_archive_host()
        sections: dict[str, tuple[list[pages.ListItem], dict[str, list[pages.ListItem]]]] = {}
        for a, url in posts:
            items, subs = sections.setdefault(a.section, ([], {}))
            (subs.setdefault(a.subsection, []) if a.subsection else items).append((f"{a.title} - {a.author}", url))
        listing: list[pages.ListSection] = [(n, it, list(su.items())) for n, (it, su) in sections.items()]
        a0, u0 = posts[0]
        listing.append(("Editor's Picks", [(f"{a0.title} - {a0.author}", u0)], []))
        listing.append(("Faults", [(f"{f.article.title} - {f.article.author}" if f.article
                                    else f"{f.description} - Fixture Faults", f.url) for f in self._faults], []))
        arc = self.archive_url
        self._list_md = pages.render_list_markdown(listing, f"{arc}/static/awesome-badge.svg", f"{arc}/awesome",
                                                   f"{arc}/static/cc0-badge.svg", f"{arc}/licenses/cc0")

    def _add_fault(self, name: str, url: str, state: str, description: str,
                   article: FixtureArticle | None = None, handler: Handler | None = None) -> None:
        self._faults.append(Fault(name, url, state, description, article))
        self._expected[url] = state
        if article is not None:
            self._content[url] = article
            self._article_urls.setdefault(article.slug, url)
        if handler is not None:
            self._route(url, handler)

    def _build_faults(self, sp: dict[str, FixtureArticle], dedicated: bool) -> None:
        h, add, simple = self._host, self._add_fault, pages.render_simple_page
        tgt = sp["redirect-target"]  # dedicated: served on its own post URL, listed nowhere
        tgt_url = f"{h(2)}/posts/{tgt.slug}" if dedicated else self._article_urls[tgt.slug]
        if dedicated:
            self._route(tgt_url, self._serve_article(tgt, tgt_url))
            self._article_urls[tgt.slug] = tgt_url
        chain, loop_a, loop_b = f"{h(1)}/faults/redirect-chain", f"{h(3)}/faults/loop-a", f"{h(3)}/faults/loop-b"
        self._route(chain + "/hop-2", _redirect(302, chain + "/hop-3"))
        self._route(chain + "/hop-3", _redirect(307, tgt_url))
        self._route(loop_b, _redirect(302, loop_a))
        moved = f"{h(1)}/faults/moved-away"
        self._snapshots[normalize_url(moved)] = (ARCHIVE_TIMESTAMP, self._page(sp["archived-404"], moved))
        refused = "http://{}:{}/faults/refused".format(*self._refused_sock.getsockname())  # type: ignore[union-attr]
        video = f"{h(3)}/watch?v=dQw4w9WgXcQ"
        v = self._variant
        add("not-found", f"{h(0)}/faults/missing-page", "dead", "Missing Page")
        add("archived-404", moved, "archived", "Moved Away", sp["archived-404"])
        add("gone", f"{h(2)}/faults/gone", "dead", "Gone For Good", None,
            _const(_html(simple("410 Gone", "This post was removed."), 410)))
        add("redirect-chain", chain, "redirected", "Redirect Chain", tgt,
            _redirect(301, "/faults/redirect-chain/hop-2"))
        add("redirect-loop", loop_a, "failed", "Redirect Loop", None, _redirect(302, loop_b))
        add("flaky-503", f"{h(0)}/faults/flaky-503", "ok", "Flaky Service", sp["flaky-503"],
            self._fail_first(sp["flaky-503"], 503, []))
        add("retry-429", f"{h(1)}/faults/rate-limited", "ok", "Rate Limited", sp["retry-429"],
            self._fail_first(sp["retry-429"], 429, [("Retry-After", "1")]))
        add("slow", f"{h(2)}/faults/slow", "failed", "Slow Server", None, self._slow)
        add("oversized", f"{h(3)}/faults/oversized", "ok", "Oversized Page", sp["oversized"],
            self._oversized(sp["oversized"]))
        add("no-content-type", f"{h(0)}/faults/no-content-type", "ok", "No Content Type", sp["no-content-type"],
            v(sp["no-content-type"], None))
        add("wrong-content-type", f"{h(1)}/faults/text-plain", "ok", "HTML As Text", sp["wrong-content-type"],
            v(sp["wrong-content-type"], "text/plain; charset=utf-8"))
        add("latin1", f"{h(2)}/faults/latin1", "ok", "Latin-1 Page", pages.LATIN1_ARTICLE,
            v(pages.LATIN1_ARTICLE, "text/html; charset=ISO-8859-1", "iso-8859-1"))
        add("cp1252", f"{h(3)}/faults/cp1252-meta", "ok", "Windows-1252 Page", pages.CP1252_ARTICLE,
            v(pages.CP1252_ARTICLE, "text/html", "windows-1252"))
        add("gzip", f"{h(0)}/faults/gzip", "ok", "Gzipped Page", sp["gzip"],
            v(sp["gzip"], "text/html; charset=utf-8", gzipped=True))
        add("pdf", f"{h(1)}/papers/{sp['pdf'].slug}.pdf", "ok", "PDF Paper", sp["pdf"],
            _const(Response(200, pages.build_pdf(sp["pdf"]), "application/pdf")))  # built now: a few ms
        add("blocked", f"{self.host_urls[0]}/private/internal-notes", "blocked", "Robots Disallowed", None,
            _const(_html(simple("Internal notes", "Crawlers must not fetch this."))))
        add("reset", f"{h(2)}/faults/reset", "failed", "Connection Reset", None, _const(Response(reset=True)))
        add("refused", refused, "failed", "Connection Refused")
        add("video", video, "ok", "Conference Talk Video", pages.VIDEO_PAGE,
            _const(_html(pages.render_video_page(pages.VIDEO_PAGE, video))))
        add("server-error", f"{h(0)}/faults/server-error", "failed", "Server Error", None,
            _const(_html(simple("500 Internal Server Error", "Oops."), 500)))
        add("ftp", f"ftp://{urlsplit(self.host_urls[0]).hostname}/pub/fixture-notes.txt", "unsupported", "FTP Mirror")
        add("mailto", "mailto:maintainers@fixture.invalid", "unsupported", "Mail The Maintainers")

    # -- fault handlers ----------------------------------------------------------------------

    def _fail_first(self, article: FixtureArticle, status: int, headers: list[tuple[str, str]]) -> Handler:
        def handler(req: Request) -> Response:
            with self._lock:
                self._attempts[req.url] += 1
                first = self._attempts[req.url] == 1
            if first:
                msg = pages.render_simple_page(f"{status} {http.HTTPStatus(status).phrase}", "Try again later.")
                return Response(status, msg.encode(), headers=list(headers))
            return _html(self._page(article, req.url))
        return handler

    async def _slow(self, req: Request) -> Response:
        await asyncio.sleep(self.slow_s)  # cancelled by stop()
        return _html(pages.render_simple_page("Finally", "Sorry for the wait."))

    def _variant(self, article: FixtureArticle, content_type: str | None, charset: str = "utf-8",
                 gzipped: bool = False) -> Handler:
        def handler(req: Request) -> Response:
            body = self._page(article, req.url, charset).encode(charset)
            if gzipped:
                return Response(200, gzip.compress(body, mtime=0), content_type,
                                [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")])
            return Response(200, body, content_type)
        return handler

    def _oversized(self, article: FixtureArticle) -> Handler:
        line = 1024
        n_lines = max(1, self.oversize_bytes // line)

        def pad(i: int) -> bytes:
            head = f"<!-- padding {i:08d} ".encode()
            return head + b"x" * (line - len(head) - 5) + b" -->\n"

        def handler(req: Request) -> Response:
            page = self._page(article, req.url).encode()
            cut = page.rindex(b"</body>")
            head, tail = page[:cut], page[cut:]

            async def stream() -> AsyncIterator[bytes]:
                yield head
                for start in range(0, n_lines, 64):  # 64 KiB chunks, never the whole body at once
                    yield b"".join(pad(i) for i in range(start, min(start + 64, n_lines)))
                yield tail
            return Response(200, content_type="text/html; charset=utf-8", stream=stream,
                            length=len(head) + n_lines * line + len(tail))
        return handler

    # -- archive host ------------------------------------------------------------------------

    def _build_archive_host(self) -> None:
        a = self.archive_url
        self._robots[urlsplit(a).netloc] = "User-agent: *\nDisallow:\n"

        def available(req: Request) -> Response:
            url = parse_qs(req.query).get("url", [""])[0]
            snap = self._snapshots.get(normalize_url(url)) if url else None
            closest = {"closest": {"status": "200", "available": True, "url": f"{a}/web/{snap[0]}/{url}",
                                   "timestamp": snap[0]}} if snap else {}
            return Response(200, json.dumps({"url": url, "archived_snapshots": closest}).encode(), "application/json")

        self._route(a + "/wayback/available", available)
        self._route(a + "/awesome-fixture/README.md",
                    lambda req: Response(200, self._list_md.encode(), "text/markdown; charset=utf-8"))
        for name, label in (("awesome-badge", "awesome"), ("cc0-badge", "CC0")):
            svg = Response(200, pages.badge_svg(label).encode(), "image/svg+xml")
            self._route(f"{a}/static/{name}.svg", _const(svg))
        self._route(a + "/awesome", _const(_html(pages.render_simple_page("Awesome", "Curated lists."))))
        self._route(a + "/licenses/cc0", _const(_html(pages.render_simple_page("CC0 1.0", "Public domain."))))

    def _replay(self, req: Request) -> Response:
        m = re.match(r"^/web/(\d{1,14})(id_)?/(.+)$", req.target)
        if not m:
            return _html(pages.render_simple_page("Not Found", "Bad archive URL."), 404)
        original = re.sub(r"^(https?):/+", r"\1://", m.group(3))
        snap = self._snapshots.get(normalize_url(original))
        if snap is None:
            return _html(pages.render_simple_page("Not in Archive", "Wayback has not archived that URL."), 404)
        ts, page = snap
        if m.group(1) != ts:  # like the real Wayback: redirect to the capture that exists
            return Response(302, b"", None, [("Location", f"/web/{ts}{m.group(2) or ''}/{original}")])
        return _html(page if m.group(2) else pages.wrap_with_toolbar(page, original, ts))

    # -- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"", None, [("Allow", "GET, HEAD")])
        is_archive = self.archive_url.endswith("//" + req.netloc)
        if self.latency_s and not is_archive:
            await asyncio.sleep(self.latency_s)
        if req.path == "/robots.txt":
            robots = self._robots.get(req.netloc)
            if robots is None:
                return _html(pages.render_simple_page("404 Not Found", "No robots here."), 404)
            return Response(200, robots.encode(), "text/plain; charset=utf-8")
        handler = self._routes.get((req.netloc, req.path))
        if handler is not None:
            resp = handler(req)
            return await resp if inspect.isawaitable(resp) else resp
        if is_archive and req.path.startswith("/web/"):
            return self._replay(req)
        return _html(pages.render_simple_page("404 Not Found", "No such page on this ZORBLAX host."), 404)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        netloc = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one_request(reader, writer, netloc):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels these; ending normally keeps Python 3.11's StreamReaderProtocol
            # from logging "Exception in callback ... CancelledError" for every open connection.
            pass
        finally:
            self._conn_tasks.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, netloc: str) -> bool:
        """Serve one request; return whether the connection stays open (keep-alive)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if int(headers.get("content-length", "0") or 0):
            await reader.readexactly(int(headers["content-length"]))
        if "://" in target:  # absolute-form
            s = urlsplit(target)
            target = (s.path or "/") + (f"?{s.query}" if s.query else "")
        req = Request(method.upper(), target, version, headers, netloc)
        conn = headers.get("connection", "").lower()
        keep = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
        started = time.monotonic()
        with self._lock:
            self._hits[normalize_url(req.url)] += 1
            self._inflight[netloc] += 1
            self._peak[netloc] = max(self._peak[netloc], self._inflight[netloc])
        status: list[int | None] = [None]
        logged = False

        def done() -> None:
            """Log the request *before* its last bytes go out, so a client that got the reply sees it."""
            nonlocal logged
            if not logged:
                logged = True
                with self._lock:
                    self._inflight[netloc] -= 1
                    self._log.append(RequestRecord(req.url, req.method, status[0], started, time.monotonic(),
                                                   req.headers.get("user-agent", "")))

        try:
            resp = _conditional(req, await self._dispatch(req))
            if resp.reset:
                done()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
            status[0] = resp.status
            keep = keep and not resp.close
            await self._send(writer, req, resp, keep, done)
        finally:
            done()
        return keep

    async def _send(self, writer: asyncio.StreamWriter, req: Request, resp: Response, keep: bool,
                    done: Callable[[], None]) -> None:
        length = resp.length if resp.stream is not None else len(resp.body)
        hdrs = [f"HTTP/1.1 {resp.status} {http.HTTPStatus(resp.status).phrase}",
                f"Date: {formatdate(usegmt=True)}", "Server: fixtureweb/1.0"]
        if resp.content_type:
            hdrs.append(f"Content-Type: {resp.content_type}")
        hdrs += [f"{k}: {v}" for k, v in resp.headers]
        hdrs += [f"Content-Length: {length}"] if resp.status != 304 else []  # a 304 never has a body
        hdrs += [f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
        last = "\r\n".join(hdrs).encode("latin-1")
        if req.method != "HEAD" and resp.stream is None:
            last += resp.body  # one send: split writes meet Nagle + delayed ACK (40 ms)
        elif req.method != "HEAD" and resp.stream is not None:
            async for chunk in resp.stream():  # hold one chunk back so done() precedes the final bytes
                writer.write(last)
                await writer.drain()
                last = chunk
        done()
        writer.write(last)
        await writer.drain()
