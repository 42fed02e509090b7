"""The address policy (SSRF): where a crawl may connect, checked at connect time, for every hop.

Every test that checks a refusal runs in a network namespace of its own (`in_own_network`: only
loopback exists there) and under a socket guard (`loopback_only`) that never connects outside
127.0.0.0/8 and records any attempt; names resolve through a resolver the test controls. A public
host is played by a loopback server: the resolver gives the name a public address and the socket
guard carries that address onto loopback, so nothing can leave the machine even if the policy
under test is broken.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest

from ingest import address_policy
from ingest.address_policy import AddressClass, AddressRefused, GuardedBackend, classify
from ingest.collection import CollectionSpec, sync_collection
from ingest.crawler import Crawler
from ingest.errors import SourceError
from ingest.link_batch import HandedLink, fetch_batch
from ingest.settings import Settings, load_settings
from ingest.sources import load_list
from ingest.store import Store
from tests import netns
from tests.conftest import FAST_CRAWL_ENV
from tests.netns import LoopbackOnly, in_own_network

# Public addresses the tests give to names they resolve; the socket guard maps them onto loopback.
LIST_HOST_IP = "93.184.215.14"
PUBLIC_PAGE_IP = "93.184.215.15"
METADATA_URL = "http://169.254.169.254/latest/meta-data/"
PAGE_TEXT = " ".join(["Sharding splits a table across machines so that each holds a part of the rows."] * 12)


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.169.254", AddressClass.NEVER),
    ("169.254.10.1", AddressClass.NEVER),
    ("fe80::1", AddressClass.NEVER),
    ("fe80::1%2", AddressClass.NEVER),
    ("::ffff:169.254.169.254", AddressClass.NEVER),
    ("64:ff9b::a9fe:a9fe", AddressClass.NEVER),
    ("2002:a9fe:a9fe::1", AddressClass.NEVER),
    ("fd00:ec2::254", AddressClass.NEVER),
    ("100.100.100.200", AddressClass.NEVER),
    ("224.0.0.1", AddressClass.NEVER),
    ("240.0.0.1", AddressClass.NEVER),
    ("127.0.0.1", AddressClass.PRIVATE),
    ("127.9.9.9", AddressClass.PRIVATE),
    ("::1", AddressClass.PRIVATE),
    ("::ffff:127.0.0.1", AddressClass.PRIVATE),
    ("::ffff:10.1.2.3", AddressClass.PRIVATE),
    ("0.0.0.0", AddressClass.PRIVATE),
    ("::", AddressClass.PRIVATE),
    ("10.0.0.1", AddressClass.PRIVATE),
    ("172.16.5.4", AddressClass.PRIVATE),
    ("192.168.1.1", AddressClass.PRIVATE),
    ("100.64.0.1", AddressClass.PRIVATE),
    ("fc00::1", AddressClass.PRIVATE),
    ("fec0::1", AddressClass.PRIVATE),
    ("93.184.215.14", AddressClass.PUBLIC),
    ("2606:4700::1111", AddressClass.PUBLIC),
])
def test_every_kind_of_address_is_classified(address: str, kind: AddressClass) -> None:
    assert classify(ipaddress.ip_address(address)).kind is kind


def test_the_setting_refuses_an_unknown_value() -> None:
    with pytest.raises(Exception, match="LINKLENS_PRIVATE_TARGETS"):
        load_settings(private_targets="sometimes")


# --- a loopback web whose pages lead elsewhere -----------------------------------------------------

@dataclass
class Web:
    server: ThreadingHTTPServer
    routes: dict[str, tuple[int, str, str]]  # path → (status, content type or Location, body)
    hits: list[str]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def web() -> Iterator[Web]:
    routes: dict[str, tuple[int, str, str]] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            status, kind, body = routes.get(self.path, (404, "text/plain", "no such page"))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", kind)
                kind = "text/plain"
            data = body.encode()
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    page = f"<html><head><title>Sharding</title></head><body><article><p>{PAGE_TEXT}</p></article></body></html>"
    routes["/page"] = (200, "text/html; charset=utf-8", page)
    routes["/page-2"] = (200, "text/html; charset=utf-8", page)
    routes["/shared"] = (200, "text/html; charset=utf-8", page)
    routes["/to-metadata"] = (302, METADATA_URL, "")
    routes["/refresh-to-metadata"] = (200, "text/html",
                                      f'<html><head><meta http-equiv="refresh" content="0; url={METADATA_URL}">'
                                      "</head><body>moved</body></html>")
    try:
        yield Web(server, routes, hits)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="loopback_only")
def loopback_only_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackOnly]:
    yield from netns.loopback_only(monkeypatch)


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str] | Callable[[], list[str]]]) -> None:
    """Names resolve as the test says (a callable answers anew each time); any other name does not exist."""

    def resolve(host: str, port: int) -> list[str]:
        answer = names.get(host.lower())
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer() if callable(answer) else list(answer)

    monkeypatch.setattr(address_policy, "resolve", resolve)


def crawl_settings(monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    # no archive: a failed link must not ask archive.org for a copy
    env = dict(FAST_CRAWL_ENV, LINKLENS_USE_ARCHIVE="false", LINKLENS_EXTRACT_WORKERS="1", **extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def write_list(path: Path, urls: list[str]) -> Path:
    items = "\n".join(f"* [Link {i}]({url}) - a link." for i, url in enumerate(urls))
    path.write_text(f"# Awesome Test\n\n## Links\n\n{items}\n", encoding="utf-8")
    return path


def crawl(settings: Settings, spec: CollectionSpec) -> dict[str, dict[str, object]]:
    """Read the collection, make the store hold it, crawl; each link's row by URL."""
    with Store.open(settings.store_path) as store:
        sync_collection(spec, settings, store)
        Crawler(settings, store).run()
        return {str(row["url"]): row for row in store.link_rows()}


def assert_stayed_on_loopback(guard: LoopbackOnly) -> None:
    assert guard.outside == [], f"connections attempted outside 127.0.0.0/8: {guard.outside}"


# --- never: link-local and metadata, whatever the origin ----------------------------------------------

@in_own_network
def test_link_local_and_metadata_are_never_fetched_even_from_a_file_list(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_dns(monkeypatch, {"evil.test": ["169.254.169.254"], "mixed.test": ["127.0.0.1", "169.254.1.1"],
                           "metadata.google.internal": ["127.0.0.1"]})
    settings = crawl_settings(monkeypatch)
    blocked = {
        METADATA_URL: "a cloud instance metadata address",
        "http://169.254.1.1/x": "a link-local address",
        "http://[fe80::1]/x": "a link-local address",
        "http://[::ffff:169.254.169.254]/latest/meta-data/": "inside an IPv6 address",
        "http://[::ffff:a9fe:a9fe]:8080/x": "inside an IPv6 address",
        f"http://evil.test:{web.port}/latest/meta-data/": "a cloud instance metadata address",
        f"http://mixed.test:{web.port}/page": "a link-local address",
        f"http://metadata.google.internal:{web.port}/computeMetadata/v1/": "metadata service",
        web.url("/to-metadata"): f"redirected to {METADATA_URL}: 169.254.169.254 is a cloud instance metadata",
        web.url("/refresh-to-metadata"): f"redirected to {METADATA_URL}: 169.254.169.254 is a cloud instance",
    }
    rows = crawl(settings, CollectionSpec([str(write_list(tmp_path / "list.md", [*blocked, web.url("/page")]))]))
    for url, words in blocked.items():
        assert rows[url]["state"] == "blocked", (url, rows[url])
        assert words in str(rows[url]["reason"]), (url, rows[url]["reason"])
        assert "never fetches it" in str(rows[url]["reason"])
    assert rows[web.url("/page")]["state"] == "ok", rows[web.url("/page")]
    assert_stayed_on_loopback(loopback_only)
    # the loopback server saw the two hops that led away, and nothing for the names that lead elsewhere
    assert "/latest/meta-data/" not in web.hits and "/computeMetadata/v1/" not in web.hits
    assert {"/to-metadata", "/refresh-to-metadata", "/page"} <= set(web.hits)


@in_own_network
def test_a_name_that_rebinds_to_link_local_is_refused_at_connect_time(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    fake_dns(monkeypatch, {"rebind.test": lambda: next(answers)})

    async def connect_twice() -> None:
        backend = GuardedBackend()
        with address_policy.private_targets(True):
            stream = await backend.connect_tcp("rebind.test", web.port, timeout=5)
            await stream.aclose()
            with pytest.raises(AddressRefused, match="rebind.test is a cloud instance metadata address"):
                await backend.connect_tcp("rebind.test", web.port, timeout=5)

    asyncio.run(connect_twice())
    assert loopback_only.connected == [("127.0.0.1", web.port)]  # the second lookup connected nowhere
    assert_stayed_on_loopback(loopback_only)


@in_own_network
def test_a_list_url_that_leads_to_link_local_is_one_sentence(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"lists.evil.test": ["169.254.169.254"]})
    settings = crawl_settings(monkeypatch)
    web.routes["/list.md"] = (302, "http://169.254.169.254/list.md", "")
    for url in (f"http://lists.evil.test:{web.port}/list.md", web.url("/list.md")):
        with pytest.raises(SourceError, match=r"cannot download the list .* is a cloud instance metadata address: "
                                              r"linklens never fetches it"):
            load_list(url, settings)
    assert_stayed_on_loopback(loopback_only)


# --- private: only where the list came from a file or a private address --------------------------

def public_list_web(web: Web, monkeypatch: pytest.MonkeyPatch, guard: LoopbackOnly, links: list[str]) -> str:
    """A list served at a public name (played by loopback); returns its URL."""
    fake_dns(monkeypatch, {"lists.public.test": [LIST_HOST_IP], "www.public.test": [PUBLIC_PAGE_IP],
                           "intranet.test": ["127.0.0.1"]})
    guard.translate.update({LIST_HOST_IP: "127.0.0.1", PUBLIC_PAGE_IP: "127.0.0.1"})
    items = "\n".join(f"* [Link {i}]({url}) - a link." for i, url in enumerate(links))
    web.routes["/list.md"] = (200, "text/markdown", f"# Awesome Public\n\n## Links\n\n{items}\n")
    return f"http://lists.public.test:{web.port}/list.md"


def closed_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@in_own_network
def test_a_public_list_cannot_lead_to_loopback_a_file_list_can(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    closed = closed_port()
    refused = [web.url("/page"), f"http://127.0.0.1:{closed}/page", f"http://intranet.test:{web.port}/page",
               f"http://[::ffff:127.0.0.1]:{web.port}/page"]
    public = f"http://www.public.test:{web.port}/page-2"
    shared = web.url("/shared")
    list_url = public_list_web(web, monkeypatch, loopback_only, [*refused, public, shared])
    file_list = write_list(tmp_path / "intranet.md", [shared])
    rows = crawl(crawl_settings(monkeypatch), CollectionSpec([list_url, str(file_list)]))

    for url in refused:
        assert rows[url]["state"] == "blocked", (url, rows[url])
        assert "read from a public address" in str(rows[url]["reason"])
        assert "LINKLENS_PRIVATE_TARGETS=allow" in str(rows[url]["reason"])
    # a server listening there or not: the same reason, word for word
    assert rows[refused[0]]["reason"] == rows[refused[1]]["reason"]
    assert rows[public]["state"] == "ok", rows[public]
    assert rows[shared]["state"] == "ok", rows[shared]  # also cited by the file list: its origin is private
    assert web.hits.count("/page") == 0  # the refused loopback page was never asked for
    assert_stayed_on_loopback(loopback_only)


@in_own_network
def test_a_public_list_of_lists_cannot_bring_in_a_loopback_list(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch) -> None:
    web.routes["/child.md"] = (200, "text/markdown", f"# Child\n\n## Links\n\n* [P]({web.url('/page')}) - p.\n")
    public_child = f"http://lists.public.test:{web.port}/child.md"
    parent = public_list_web(web, monkeypatch, loopback_only, [web.url("/child.md"), public_child])
    settings = crawl_settings(monkeypatch)
    with Store.open(settings.store_path) as store:
        loaded = sync_collection(CollectionSpec([], [parent]), settings, store)
    assert [x.source for x in loaded.lists] == [public_child]
    (skipped,) = loaded.skipped
    assert skipped.source == web.url("/child.md") and "read from a public address" in skipped.reason
    assert_stayed_on_loopback(loopback_only)


@in_own_network
def test_the_setting_denies_or_allows_private_targets(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file_list = write_list(tmp_path / "intranet.md", [web.url("/page")])
    rows = crawl(crawl_settings(monkeypatch, LINKLENS_PRIVATE_TARGETS="deny"), CollectionSpec([str(file_list)]))
    assert rows[web.url("/page")]["state"] == "blocked"
    assert "LINKLENS_PRIVATE_TARGETS=deny forbids" in str(rows[web.url("/page")]["reason"])
    assert "/page" not in web.hits

    # another loopback address: a host that takes no connection is set aside for the crawl, and 127.0.0.1 serves
    gone_url = f"http://127.0.0.9:{closed_port('127.0.0.9')}/gone"
    list_url = public_list_web(web, monkeypatch, loopback_only, [web.url("/page-2"), METADATA_URL, gone_url])
    rows = crawl(crawl_settings(monkeypatch, LINKLENS_PRIVATE_TARGETS="allow"), CollectionSpec([list_url]))
    assert rows[web.url("/page-2")]["state"] == "ok", rows[web.url("/page-2")]
    assert rows[METADATA_URL]["state"] == "blocked"  # allow never reaches link-local
    # a public list reaching a private address that takes no connection learns only that, not "refused"
    gone = rows[gone_url]
    assert gone["state"] == "failed" and "no connection to 127.0.0.9 (a private address)" in str(gone["reason"])
    assert "refused" not in str(gone["reason"]).lower()
    assert_stayed_on_loopback(loopback_only)


@in_own_network
def test_the_ray_engines_fetch_stage_follows_each_links_origin(
        web: Web, loopback_only: LoopbackOnly, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = crawl_settings(monkeypatch)
    links = [HandedLink(1, web.url("/page"), "trusted", private_origin=True),
             HandedLink(2, web.url("/page-2"), "untrusted"),
             HandedLink(3, METADATA_URL, "metadata", private_origin=True)]
    outcomes = fetch_batch(settings, links).outcomes
    assert outcomes[1].state.value == "ok" and outcomes[1].body is not None
    assert outcomes[2].state.value == "blocked" and "read from a public address" in outcomes[2].reason
    assert outcomes[3].state.value == "blocked" and "never fetches it" in outcomes[3].reason
    assert "/page-2" not in web.hits
    assert_stayed_on_loopback(loopback_only)


def test_the_guard_refuses_what_it_cannot_cover() -> None:
    import httpx

    with pytest.raises(RuntimeError, match="cannot install the address policy"):
        address_policy.guard(httpx.AsyncHTTPTransport(proxy="http://127.0.0.1:9", trust_env=False))
    assert isinstance(address_policy.guard(httpx.HTTPTransport(trust_env=False))._pool._network_backend,
                      httpcore.NetworkBackend)
