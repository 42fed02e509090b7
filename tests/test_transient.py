"""Transient is not dead: DNS blips, refused connections and outages end `failed` or `pending`, never `dead`.

Host names here (`*.test`) go through a resolver the test controls (socket.getaddrinfo patched in
this process, or in the crawl's own process for the bundled list), so "the network goes down" and
"DNS has a temporary failure" are real getaddrinfo errors inside the real HTTP stack.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ingest.crawler import Crawler, CrawlProgress
from ingest.politeness import NETWORK_DOWN_AFTER_HOSTS
from ingest.settings import DEFAULT_CONCURRENCY, Settings
from ingest.sources import BUNDLED_LIST, load_list
from ingest.store import Store
from ingest.urls import host_of
from tests.fixtureweb import FixtureWeb

REPO = Path(__file__).resolve().parent.parent
CRAWL_DEADLINE_S = 60.0
REAL_GETADDRINFO = socket.getaddrinfo


class Resolver:
    """getaddrinfo for `*.test` names: each maps to a loopback address, or fails as told; counts lookups."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.failing: dict[str, int] = {}  # name -> gaierror errno
        self.all_down = False
        self.lookups: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".test"):
            return REAL_GETADDRINFO(host, *args, **kwargs)
        with self._lock:
            self.lookups[name] += 1
        if self.all_down:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name in self.failing:
            errno = self.failing[name]
            message = ("Name or service not known" if errno == socket.EAI_NONAME
                       else "Temporary failure in name resolution")
            raise socket.gaierror(errno, message)
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return REAL_GETADDRINFO(self.names[name], *args, **kwargs)


def named(url: str, name: str) -> str:
    """`url` with its IP replaced by `name` (same port and path)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{name}:{parts.port}").geturl()


def write_list(path: Path, urls: list[str]) -> Path:
    path.write_text("\n".join(["# Names", "", "## Links", ""] + [f"* [Link {i}]({u})" for i, u in enumerate(urls)])
                    + "\n")
    return path


def crawl(settings: Settings, list_file: Path, progress: Callable[[CrawlProgress], None] | None = None,
          retry_failed: bool = False) -> dict[str, dict[str, object]]:
    with Store.open(settings.store_path) as store:
        store.add_links(load_list(str(list_file), settings).links)
        asyncio.run(asyncio.wait_for(Crawler(settings, store).crawl(progress=progress, retry_failed=retry_failed),
                                     CRAWL_DEADLINE_S))
        return {str(r["url"]): r for r in store.link_rows()}


def posts(web: FixtureWeb) -> list[str]:
    return [u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u]


def test_a_dns_blip_ends_failed_not_dead_and_retry_failed_fetches_it(
        web: FixtureWeb, crawl_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = posts(web)[:3]
    flaky_ip = urlsplit(good[0]).hostname
    assert flaky_ip is not None
    resolver = Resolver({"flaky.test": flaky_ip})
    resolver.failing["flaky.test"] = socket.EAI_AGAIN
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    flaky = named(good[0], "flaky.test")
    list_file = write_list(tmp_path / "blip.md", [flaky, *good[1:]])

    report = crawl(crawl_settings, list_file)
    assert report[flaky]["state"] == "failed", report[flaky]
    assert "DNS temporary failure" in str(report[flaky]["reason"])
    assert resolver.lookups["flaky.test"] >= 2 * crawl_settings.max_attempts  # retried now and at the end
    assert all(report[u]["state"] == "ok" for u in good[1:])

    del resolver.failing["flaky.test"]  # the blip is over
    hits = {u: web.hits(u) for u in good[1:]}
    again = crawl(crawl_settings, list_file, retry_failed=True)
    assert again[flaky]["state"] == "ok", again[flaky]
    assert {u: web.hits(u) for u in good[1:]} == hits  # only the failed link was tried again


def test_a_host_name_is_dead_only_after_a_second_lookup_while_others_answer(
        web: FixtureWeb, crawl_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver({})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    gone = "http://gone.test/a-post"
    list_file = write_list(tmp_path / "gone.md", [gone, *posts(web)[:2]])
    report = crawl(crawl_settings, list_file)
    assert report[gone]["state"] == "dead", report[gone]
    assert "confirmed by a second lookup" in str(report[gone]["reason"])
    assert resolver.lookups["gone.test"] == 2  # once in the crawl, once at its end (robots.txt asks first)


def test_when_the_network_goes_down_midway_what_failed_because_of_it_stays_pending(
        web: FixtureWeb, crawl_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = posts(web)
    names = {f"site-{i}.test": str(urlsplit(good[i % len(good)]).hostname) for i in range(30)}
    resolver = Resolver(names)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    urls = [named(good[i % len(good)], f"site-{i}.test") for i in range(30)]
    list_file = write_list(tmp_path / "outage.md", urls)
    finished_before_outage = 6

    def progress(p: CrawlProgress) -> None:
        if p.done >= finished_before_outage:
            resolver.all_down = True  # from now on every lookup fails: the network is gone

    report = crawl(crawl_settings, list_file, progress)
    states = Counter(str(r["state"]) for r in report.values())
    assert set(states) == {"ok", "pending"}, states
    assert states["ok"] >= finished_before_outage
    pending = [r for r in report.values() if r["state"] == "pending"]
    assert all("network looks down" in str(r["reason"]) for r in pending)

    resolver.all_down = False  # back online: the same crawl takes up exactly what was left
    again = crawl(crawl_settings, list_file)
    assert Counter(str(r["state"]) for r in again.values()) == {"ok": 30}


OFFLINE_RUNNER = """
import atexit, os, socket, sys
errno = int(sys.argv[1])
real = socket.getaddrinfo
looked_up = set()
def offline(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.startswith("127.") or name == "localhost":
        return real(host, *args, **kwargs)
    looked_up.add(name)
    raise socket.gaierror(errno, "Temporary failure in name resolution" if errno == socket.EAI_AGAIN
                          else "Name or service not known")
socket.getaddrinfo = offline
atexit.register(lambda: open(os.environ["LOOKED_UP_FILE"], "w").write("\\n".join(sorted(looked_up))))
sys.argv = ["linklens", *sys.argv[2:]]
from cli.main import main
main()
"""

@pytest.mark.slow
@pytest.mark.parametrize("errno", [socket.EAI_NONAME, socket.EAI_AGAIN], ids=["nxdomain", "temporary"])
def test_offline_the_bundled_list_stops_asking_and_leaves_no_link_dead(errno: int, data_dir: Path) -> None:
    """No network: every name fails to resolve, either as "unknown" (this machine) or "temporary" (a laptop
    with Wi-Fi off). Default settings, the bundled list of ~600 links."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLENS_")}
    env["LINKLENS_DATA_DIR"] = str(data_dir)
    env["LOOKED_UP_FILE"] = str(data_dir / "looked-up.txt")
    # A hang guard, not a speed target: the crawl ends because it stops asking once it knows it is offline.
    done = subprocess.run([sys.executable, "-c", OFFLINE_RUNNER, str(errno), "crawl", "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with Store.open(data_dir / "linklens.sqlite3") as store:
        counts = store.state_counts()
        rows = store.link_rows()
    assert counts.get("dead", 0) == 0, counts
    listed = len(load_list(str(BUNDLED_LIST), Settings(data_dir=data_dir)).links)
    web_links = sum(1 for r in rows if str(r["url"]).startswith(("http://", "https://")))
    assert counts.get("pending", 0) == web_links and sum(counts.values()) == listed, counts
    # Why it ends fast: hosts failing before the crawl calls the network down, plus those already in flight;
    # the other ~200 hosts of the list are never looked up (a crawl that kept asking would look up all 233).
    looked_up = (data_dir / "looked-up.txt").read_text().split()
    hosts = {host_of(str(r["url"])) for r in rows if str(r["url"]).startswith(("http://", "https://"))}
    bound = NETWORK_DOWN_AFTER_HOSTS + 2 * DEFAULT_CONCURRENCY
    assert 0 < len(looked_up) <= bound < len(hosts), (looked_up, len(hosts))
