"""The hostile web's links: what each server does wrong and where the crawler must end.

Hosts (each its own 127.0.1.x address and OS-chosen port):

- ``main``: no robots.txt (404: everything allowed); good articles and most faults.
- ``second``: robots.txt allows everything; good articles, the meta refresh's target.
- ``robots-503``: robots.txt answers 503 every time, so (RFC 9309) the site counts as disallowed.
- ``robots-deny``: robots.txt disallows everything; a redirect from ``main`` leads here.
- ``archive``: the fake web archive; it has no snapshot of anything.
- ``refused``: a bound socket that never listens: every connection is refused.
Plus ``no-such-host.invalid``, a name that never resolves (RFC 6761).

Every route's expected final state and the words its reason must hold are in the Route table that
``build_routes`` returns. ``second`` also serves lists under ``/lists/`` for the list-download and
``--lists-from`` tests (``LIST_OF_LISTS_PATH``: good children, a child trickling its headers, a 404
child, malformed child URLs); they are not links of the hostile list.
Routes with ``extract_work=True`` test sniffing, charsets and isolated
extraction (issue 7 items 3–5, built on another branch): their expectations are written as the
issue states them and hold once that work is merged.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import zlib
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from tests.fixtureweb.pages import FixtureArticle, load_fixture_articles, render_article_page, render_simple_page

if TYPE_CHECKING:
    from .server import Handler, HostileWeb, Request

HOSTS = ("main", "second", "robots-503", "robots-deny", "archive", "refused")
NXDOMAIN_URL = "http://no-such-host.invalid/gone-for-good"
SCRIPT_TITLE = "<script>alert('linklens')</script> Scripted Title"
CREME_BRULEE = "crème brûlée"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NESTING_DEPTH = 30_000
LIST_OF_LISTS_PATH = "/lists/awesome-of-awesome.md"
TRICKLING_LIST_PATH = "/lists/trickle-headers.md"
GOOD_CHILD_PATHS = ("/lists/awesome-a.md", "/lists/awesome-b.md")
MISSING_CHILD_PATH = "/lists/missing.md"
BOMB_LIST_PATH = "/lists/bomb.md"  # a list, then gzip'd spaces decoding far past the 20 MB list cap
BOMB_LIST_DECODED_BYTES = 64 * 2**20
STACKED_LIST_PATH = "/lists/stacked.md"  # `gzip, gzip`; plain when asked for identity
# URLs no HTTP client can send: idna refuses their host names (IDNAError) before any lookup, so a broken
# refusal cannot send anything off this machine. (`https://☃.com/…` is not one of them in a list: the list
# parser writes it as its punycode name, which is real; given as an argument, httpx refuses it.)
MALFORMED_CHILD_URLS = ("https://xn--abc.com/README.md", "https://xn--zz.com/README.md")
MALFORMED_ARGUMENT_URLS = ("https://☃.com/README.md", *MALFORMED_CHILD_URLS)


@dataclass(frozen=True)
class Route:
    """One link of the hostile list and the crawler's expected verdict on it."""

    name: str
    url: str
    title: str  # as written in the list
    state: str  # expected final state
    reason: str  # words (lower case) its reason must contain; "" when none are required
    description: str
    article: FixtureArticle | None = None  # text that must come out of it, searchable
    extract_work: bool = False


# -- raw responses ---------------------------------------------------------------------------


def head(status: str, headers: list[tuple[str, str]], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status}", *(f"{k}: {v}" for k, v in headers), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def response(body: bytes, content_type: str | None = "text/html; charset=utf-8", status: str = "200 OK",
             extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Content-Type", content_type)] if content_type else []
    headers += [*(extra or []), ("Content-Length", str(len(body)))]
    return head(status, headers) + body


def fixed(data: bytes) -> Handler:
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
    return handler


async def not_found(req: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(response(render_simple_page("Not Found", "No such page.").encode(), status="404 Not Found"))


def asks_for_identity(req: Request) -> bool:
    return req.headers.get("accept-encoding", "").strip().lower() == "identity"


def page(article: FixtureArticle, url: str) -> bytes:
    return render_article_page(article, url).encode("utf-8")


def creme_brulee_page(charset_meta: str | None) -> str:
    meta = f'<meta charset="{charset_meta}">' if charset_meta else ""
    paragraph = (f"Our {CREME_BRULEE} recipe scales from one ramekin to a banquet: the custard sets in a water "
                 "bath at a low oven temperature, and the sugar crust is torched only at the last moment so it "
                 "stays glassy. Caching the custard base overnight is the trick that lets one kitchen serve "
                 "four hundred guests without a queue at the torch.")
    return (f"<!DOCTYPE html><html><head>{meta}<title>Crème Brûlée for Four Hundred</title></head><body>"
            f"<article><h1>Crème Brûlée for Four Hundred</h1><p>{paragraph}</p><p>{paragraph}</p></article>"
            "</body></html>")


def deeply_nested_page() -> bytes:
    return (b"<!DOCTYPE html><html><head><title>Deep</title></head><body>" + b"<div>" * NESTING_DEPTH
            + b"<p>The bottom of a very deep document.</p>" + b"</div>" * NESTING_DEPTH + b"</body></html>")


def zip_bytes() -> bytes:
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "nothing to index here\n" * 50)
    return buffer.getvalue()


def noise(n: int) -> bytes:
    """Deterministic bytes with no text in them."""
    out = bytearray()
    x = 0x2545F491
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out.append((x >> 16) & 0xFF)
    return bytes(out)


# -- handlers that misbehave over time ---------------------------------------------------------


def lying_encoding(body: bytes, encoding: str, honest_on_identity: bool) -> Handler:
    """Claims `encoding` on a plain body; tells the truth when asked for identity, if `honest_on_identity`."""
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        if honest_on_identity and asks_for_identity(req):
            writer.write(response(body))
        else:
            writer.write(response(body, extra=[("Content-Encoding", encoding)]))
    return handler


@functools.cache
def repeated_gzip(prefix: bytes, block: bytes, count: int) -> bytes:
    """A gzip stream of `prefix` then `block` `count` times, built without compressing it all.

    After a full flush a deflate stream no longer refers back, so every identical block compresses to
    identical bytes: compress it once, repeat the bytes. Only the trailer's CRC-32 reads every byte
    (about a second per GiB); it is exact, so a decoder that reads to the end finds a valid stream.
    """
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head_bytes = raw.compress(prefix) + raw.flush(zlib.Z_FULL_FLUSH)
    unit = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    final_empty_block = b"\x03\x00"
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    size = (len(prefix) + len(block) * count) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head_bytes + unit * count + final_empty_block
            + struct.pack("<II", crc, size))


def stacked_bomb(web: HostileWeb) -> bytes:
    """`Content-Encoding: gzip, gzip`: a few KB decoding to about a thousandth of `web.bomb_bytes`, which
    decodes to `web.bomb_bytes` of spaces."""
    inner = repeated_gzip(b"", b" " * (1 << 20), max(1, web.bomb_bytes >> 20))
    return _gzip(inner)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def one_chunk_bomb(web: HostileWeb, article: FixtureArticle, url: str) -> Handler:
    """An article, then spaces to `web.bomb_bytes`, gzip, written in one go: each network chunk the client
    reads decodes to tens of megabytes."""
    text = page(article, url)
    body = repeated_gzip(text[: text.rindex(b"</body>")] + b"<!--", b" " * (1 << 20), max(1, web.bomb_bytes >> 20))
    return fixed(head("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Encoding", "gzip"),
                                 ("Content-Length", str(len(body)))]) + body)


def stacked(body: bytes, coded: bytes, honest_on_identity: bool,
            content_type: str = "text/html; charset=utf-8") -> Handler:
    """`coded` under `Content-Encoding: gzip, gzip`; `body` when asked for identity, if `honest_on_identity`."""
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        if honest_on_identity and asks_for_identity(req):
            writer.write(response(body, content_type))
        else:
            writer.write(response(coded, content_type, extra=[("Content-Encoding", "gzip, gzip")]))
    return handler


def gzip_bomb(web: HostileWeb, article: FixtureArticle, url: str) -> Handler:
    """An article whose gzip body decodes to `web.bomb_bytes` (an HTML comment of spaces after it), streamed."""
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        text = page(article, url)
        writer.write(head("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Encoding", "gzip")]))
        writer.write(compressor.compress(text[: text.rindex(b"</body>")] + b"<!--"))
        block = b" " * (1 << 20)
        for _ in range(web.bomb_bytes >> 20):
            data = compressor.compress(block)
            if data:
                writer.write(data)
                await writer.drain()  # the client stops reading at its cap; this then fails or is cancelled
        writer.write(compressor.compress(b"--></body></html>") + compressor.flush())
    return handler


def trickle(web: HostileWeb) -> Handler:
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "1000000")]))
        writer.write(b"<html><body><p>")
        while True:
            await asyncio.sleep(web.trickle_interval_s)
            writer.write(b"z")
            await writer.drain()
    return handler


def trickle_headers(web: HostileWeb) -> Handler:
    """A status line, then a header one byte at a time, forever: the headers never complete."""
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/markdown\r\nX-Padding: ")
        while True:
            await asyncio.sleep(web.trickle_interval_s)
            writer.write(b"z")
            await writer.drain()
    return handler


async def never_answers(req: Request, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # until stop() cancels it


def truncated(body: bytes) -> Handler:
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                     ("Content-Length", str(len(body)))]) + body[: len(body) // 2])
        await writer.drain()
        writer.close()
    return handler


async def reset_at_once(req: Request, writer: asyncio.StreamWriter) -> None:
    from .server import reset
    reset(writer)


def http10_until_close(body: bytes) -> Handler:
    async def handler(req: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
        for start in range(0, len(body), 4096):
            writer.write(body[start:start + 4096])
            await writer.drain()
    return handler


def robots(text: str | None, status: str = "200 OK") -> Handler:
    if text is None:
        return fixed(response(b"no", "text/plain", status))
    return fixed(response(text.encode(), "text/plain; charset=utf-8", status))


# -- the table ---------------------------------------------------------------------------------


def build_routes(web: HostileWeb) -> tuple[list[Route], dict[tuple[str, str], Handler]]:
    """Every link of the hostile list, and the handler of every (host, path) the crawler may ask."""
    articles = load_fixture_articles()
    routes: list[Route] = []
    handlers: dict[tuple[str, str], Handler] = {}
    taken = iter(articles)

    def add(name: str, host: str, path: str, state: str, reason: str, description: str, handler: Handler | None,
            article: FixtureArticle | None = None, title: str | None = None, extract_work: bool = False) -> str:
        url = web.url(host, path) if host in web.urls else path
        if handler is not None:
            handlers[(host, path)] = handler
        routes.append(Route(name, url, title or name.replace("-", " ").title(), state, reason, description, article,
                            extract_work))
        return url

    def good(name: str, host: str, title: str | None = None) -> None:
        article = next(taken)
        path = f"/posts/{article.slug}"
        handler = fixed(response(page(article, web.url(host, path))))
        add(name, host, path, "ok", "", "a well-behaved article page", handler, article, title or article.title)

    handlers[("second", "/robots.txt")] = robots("User-agent: *\nDisallow:\n")
    handlers[("robots-503", "/robots.txt")] = robots(None, "503 Service Unavailable")
    handlers[("robots-deny", "/robots.txt")] = robots("User-agent: *\nDisallow: /\n")
    handlers[("archive", "/wayback/available")] = fixed(response(b'{"archived_snapshots": {}}', "application/json"))

    good("good-1", "main")
    good("good-2", "main")
    good("good-3", "second")
    good("good-script-title", "second", title=SCRIPT_TITLE)

    a = next(taken)
    add("lying-gzip", "main", "/lying-gzip", "ok", "", "Content-Encoding: gzip on a plain body; honest when asked "
        "for identity", lying_encoding(page(a, web.url("main", "/lying-gzip")), "gzip", True), a)
    add("lying-deflate-always", "main", "/lying-deflate", "failed", "could not be decoded",
        "Content-Encoding: deflate on a plain body, whatever is asked",
        lying_encoding(render_simple_page("Plain", "Not deflated.").encode(), "deflate", False))
    a = next(taken)
    add("unknown-encoding", "main", "/unknown-encoding", "ok", "", "Content-Encoding: x-zorblax; honest when asked "
        "for identity", lying_encoding(page(a, web.url("main", "/unknown-encoding")), "x-zorblax", True), a)
    add("unknown-encoding-always", "main", "/unknown-encoding-always", "failed", "cannot decode",
        "Content-Encoding: x-zorblax, whatever is asked",
        lying_encoding(render_simple_page("Zorblax", "Encoded?").encode(), "x-zorblax", False))
    a = next(taken)
    add("gzip-bomb", "main", "/gzip-bomb", "ok", "body cut", "an article, then a gzip stream decoding to 1 GB of "
        "spaces; cut at the decoded-size cap", gzip_bomb(web, a, web.url("main", "/gzip-bomb")), a)
    a = next(taken)
    add("one-chunk-bomb", "main", "/one-chunk-bomb", "ok", "body cut", "an article, then gzip decoding to 1 GB of "
        "spaces, sent whole: one network chunk decodes to megabytes", one_chunk_bomb(web, a, web.url(
            "main", "/one-chunk-bomb")), a)
    add("stacked-bomb", "main", "/stacked-bomb", "failed", "stacked", "Content-Encoding: gzip, gzip: a few KB "
        "decoding to 1 MB, then to 1 GB; whatever is asked", stacked(b"", stacked_bomb(web), False))
    a = next(taken)
    text = page(a, web.url("main", "/stacked-honest"))
    add("stacked-honest", "main", "/stacked-honest", "ok", "", "Content-Encoding: gzip, gzip on an article; plain "
        "when asked for identity", stacked(text, _gzip(_gzip(text)), True), a)
    add("truncated-body", "main", "/truncated", "failed", "connection broken", "Content-Length promises twice what "
        "is sent, then the connection closes", truncated(render_simple_page("Half", "x" * 4000).encode()))
    add("reset", "main", "/reset", "failed", "connection broken", "request read, then RST before any response",
        reset_at_once)
    add("not-http", "main", "/not-http", "failed", "connection broken", "answers an SSH banner instead of HTTP",
        fixed(b"SSH-2.0-OpenSSH_9.6\r\n"))
    add("header-without-colon", "main", "/no-colon", "failed", "connection broken", "a header line without a colon",
        fixed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nThis line has no colon\r\nContent-Length: 2\r\n"
              b"Connection: close\r\n\r\nhi"))
    add("trickle", "main", "/trickle", "failed", "too slow", "headers, then one byte at a time, forever",
        trickle(web))
    add("never-answers", "main", "/never-answers", "failed", "timed out", "reads the request, never answers",
        never_answers)
    add("zip", "main", "/notes.zip", "unsupported", "zip", "a zip archive as application/zip",
        fixed(response(zip_bytes(), "application/zip")), extract_work=True)
    add("octet-stream", "main", "/blob", "unsupported", "binary", "random bytes as application/octet-stream",
        fixed(response(noise(20_000), "application/octet-stream")), extract_work=True)
    add("png-as-html", "main", "/image.html", "unsupported", "png", "a PNG labelled text/html",
        fixed(response(PNG_MAGIC + noise(20_000), "text/html; charset=utf-8")), extract_work=True)
    add("empty-200", "main", "/empty", "unsupported", "empty", "200 with an empty body",
        fixed(response(b"")), extract_work=True)
    add("deep-html", "main", "/deep", "ok", "", f"{NESTING_DEPTH} nested <div>s around one sentence",
        fixed(response(deeply_nested_page())), extract_work=True)
    a = next(taken)
    add("non-ascii-etag", "main", "/etag", "ok", "", "an ETag with non-ASCII bytes (sent back on --refresh)",
        fixed(head("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(page(a, web.url("main", "/etag")))))])[:-2]
              + 'ETag: "café-ü"\r\n\r\n'.encode() + page(a, web.url("main", "/etag"))), a)
    add("charset-lie", "main", "/charset-lie", "ok", "", "UTF-8 bytes under charset=iso-8859-1, <meta charset=utf-8>",
        fixed(response(creme_brulee_page("utf-8").encode(), "text/html; charset=iso-8859-1")), extract_work=True)
    add("bom", "main", "/bom", "ok", "", "a UTF-8 BOM under charset=windows-1252",
        fixed(response(b"\xef\xbb\xbf" + creme_brulee_page(None).encode(), "text/html; charset=windows-1252")),
        extract_work=True)
    a = next(taken)
    add("http10-no-length", "main", "/http10", "ok", "", "HTTP/1.0, no Content-Length: the body ends at close",
        http10_until_close(page(a, web.url("main", "/http10"))), a)
    add("unauthorized", "main", "/private", "failed", "http 401", "401 every time",
        fixed(response(b"no", status="401 Unauthorized")))
    add("legal", "main", "/censored", "failed", "http 451", "451 every time",
        fixed(response(b"no", status="451 Unavailable For Legal Reasons")))
    a = next(taken)
    target = web.url("second", f"/posts/{a.slug}")
    handlers[("second", f"/posts/{a.slug}")] = fixed(response(page(a, target)))
    add("meta-refresh", "main", "/meta-refresh", "redirected", "redirected to", "a page whose only content is a "
        "meta refresh to an article on another host",
        fixed(response(f'<html><head><meta http-equiv="refresh" content="0; url={target}"></head></html>'.encode())),
        a)
    add("redirect-to-disallowed", "main", "/to-private", "blocked", "robots.txt", "302 to a host whose robots.txt "
        "disallows everything", fixed(head("302 Found", [("Location", web.url("robots-deny", "/page")),
                                                          ("Content-Length", "0")])))
    add("robots-disallow", "robots-deny", "/page", "blocked", "robots.txt", "robots.txt disallows everything",
        fixed(response(b"never fetched")))
    add("robots-503", "robots-503", "/page", "failed", "robots.txt could not be read", "robots.txt answers 503: "
        "disallowed for this crawl (RFC 9309)", fixed(response(b"never fetched")))
    add("malformed-link", "", "https://xn--abc.com/post", "failed", "cannot request this url", "a list item whose "
        "host name no client can send (IDNA)", None)
    add("malformed-redirect", "main", "/to-malformed", "failed", "cannot request this url", "302 to a URL whose "
        "host name no client can send", fixed(head("302 Found", [("Location", "https://xn--zz.com/next"),
                                                                 ("Content-Length", "0")])))
    add("refused", "refused", "/page", "failed", "connection refused", "connection refused (tried again at the end)",
        None)
    add("nxdomain", "", NXDOMAIN_URL, "dead", "does not resolve", "a host name that never resolves", None)
    add_lists(web, routes, handlers)
    return routes, handlers


def child_list_markdown(title: str, links: list[Route]) -> str:
    lines = [f"# {title}", "", "## Articles", ""] + [f"* [{escape(r.title, quote=False)}]({r.url})" for r in links]
    return "\n".join(lines) + "\n"


def child_list(title: str, links: list[Route]) -> Handler:
    return fixed(response(child_list_markdown(title, links).encode(), "text/markdown; charset=utf-8"))


def add_lists(web: HostileWeb, routes: list[Route], handlers: dict[tuple[str, str], Handler]) -> None:
    """The lists of the list-download tests, on ``second``: two good children (the good articles), one whose
    headers trickle, and the list of lists naming them, a missing one and the malformed URLs."""
    good = [r for r in routes if r.name.startswith("good")]
    handlers[("second", GOOD_CHILD_PATHS[0])] = child_list("Awesome A", good[:2])
    handlers[("second", GOOD_CHILD_PATHS[1])] = child_list("Awesome B", good[2:])
    handlers[("second", TRICKLING_LIST_PATH)] = trickle_headers(web)
    markdown = child_list_markdown("Awesome Coded", good).encode()
    bomb = repeated_gzip(markdown, b" " * (1 << 20), BOMB_LIST_DECODED_BYTES >> 20)
    handlers[("second", BOMB_LIST_PATH)] = fixed(response(bomb, "text/markdown", extra=[("Content-Encoding", "gzip")]))
    handlers[("second", STACKED_LIST_PATH)] = stacked(markdown, _gzip(_gzip(markdown)), True, "text/markdown")
    children = [web.url("second", p) for p in (*GOOD_CHILD_PATHS, TRICKLING_LIST_PATH, MISSING_CHILD_PATH)]
    lines = ["# Awesome of Awesome", "", "## Lists", ""]
    lines += [f"* [Child {i}]({url})" for i, url in enumerate([*children, *MALFORMED_CHILD_URLS])]
    handlers[("second", LIST_OF_LISTS_PATH)] = fixed(response("\n".join(lines).encode(),
                                                              "text/markdown; charset=utf-8"))


def list_markdown(web: HostileWeb) -> str:
    """The hostile list: good articles first, then every fault; titles escaped as markdown text."""
    lines = ["# Awesome Hostile", "", "A list whose servers misbehave.", ""]
    for section, group in (("Good", [r for r in web.routes if r.name.startswith("good")]),
                           ("Faults", [r for r in web.routes if not r.name.startswith("good")])):
        lines += [f"## {section}", ""]
        lines += [f"* [{escape(r.title, quote=False)}]({r.url}) - {r.description}" for r in group]
        lines.append("")
    return "\n".join(lines)

