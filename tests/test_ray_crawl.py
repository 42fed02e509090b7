"""`linklens crawl --engine ray`: the same outcome as the local engine, resumable, with clear errors.

One real Ray (2 CPUs) serves the whole module: started here, it is the session every in-process
`linklens` command joins (Ray stays up between tests), and the cluster a separate driver process
joins with --ray-address.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from cli.engines.datasets import ARTICLES, articles_from_table
from cli.engines.ray_crawl import fetch_units
from cli.engines.ray_politeness import ClusterHostGate, start_host_gates
from cli.engines.storage import Datasets
from cli.main import app
from ingest.link_batch import HandedLink
from ingest.store import Store
from ingest.urls import normalise_url
from tests.conftest import FAST_CRAWL_ENV, finished_links
from tests.fixtureweb import FixtureWeb
from tests.hostileweb.many_hosts import ARCHIVE_ADDRESS, ManyHosts, host_address, target_address
from tests.ray_fixtures import ray_address

pytest_plugins = ["tests.ray_fixtures"]

runner = CliRunner()
HOST_LINKS = 3  # a host counts as finished with this many links at least, all final
DEADLINE_S = 120


def crawl_env(web: FixtureWeb, data_dir: Path) -> dict[str, str]:
    return {**FAST_CRAWL_ENV, "LINKLENS_ARCHIVE_URL": web.archive_url, "LINKLENS_DATA_DIR": str(data_dir)}


def reason_class(reason: str | None) -> str:
    """What a reason says, without the parts that vary between two crawls (numbers: ports, times)."""
    words = (reason or "").split(";")[0].split()
    return " ".join(w for w in words[:3] if not any(c.isdigit() for c in w))


def crawl_outcome(store_path: Path) -> dict[str, tuple[str, str, str | None]]:
    """url -> (state, reason class, document text) of every link in a store."""
    with Store.open(store_path) as store:
        documents = {a.url: a.document.text if a.document else None for a in store.articles()}
        return {str(r["url"]): (str(r["state"]), reason_class(r["reason"]), documents[str(r["url"])])  # type: ignore[arg-type]
                for r in store.link_rows()}


def test_ray_crawl_matches_the_local_crawl(ray_cluster: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes, summaries = {}, {}
    with FixtureWeb(n_hosts=4) as web:
        list_file = web.write_list_markdown(tmp_path / "list.md")
        for engine in ("local", "ray"):
            web.reset_counters()  # the 503-then-200 and 429 faults fail once again for each engine
            for key, value in crawl_env(web, tmp_path / engine).items():
                monkeypatch.setenv(key, value)
            result = runner.invoke(app, ["crawl", str(list_file), "--engine", engine, "--json"])
            assert result.exit_code == 0, result.output
            summaries[engine] = json.loads(result.stdout)
            outcomes[engine] = crawl_outcome(tmp_path / engine / "linklens.sqlite3")
        expected = {normalise_url(u): s for u, s in web.expected_states().items()}
    assert {u: o[0] for u, o in outcomes["ray"].items()} == expected
    assert outcomes["ray"] == outcomes["local"]  # states, reasons and every document's text
    assert summaries["ray"]["states"] == summaries["local"]["states"]
    assert summaries["ray"]["crawled"] == summaries["local"]["crawled"] == len(expected)
    assert summaries["ray"]["this_run"] == summaries["local"]["this_run"]

    datasets = Datasets.at(str(tmp_path / "ray" / "datasets"))
    articles = articles_from_table(datasets.dataset(datasets.files(ARTICLES)).to_table())
    assert {a.url: a.document.text if a.document else None for a in articles} == {
        u: o[2] for u, o in outcomes["ray"].items()}


POLITE_HOSTS = 16  # listed hosts, packed into several fetch units
POLITE_LINKS_PER_HOST = 2
POLITE_LATENCY_S = 0.05  # each answer held this long, so requests overlap
LEASE_S = 0.3


def test_units_share_one_gate_per_host_for_redirect_targets_and_the_archive(
        ray_cluster: Any, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead links on many listed hosts, each redirecting to one platform and then recovered from the archive:
    whatever the number of fetch units, no host sees more requests at once than the per-host concurrency."""
    per_host = 2
    with ManyHosts(latency_s=POLITE_LATENCY_S) as web:
        urls = [web.redirecting_url(h, 0, f"gone/{h}/{n}")
                for n in range(POLITE_LINKS_PER_HOST) for h in range(POLITE_HOSTS)]
        list_file = tmp_path / "list.md"
        list_file.write_text("# Blogs\n\n## Posts\n\n" + "".join(f"* [Post {i}]({u})\n" for i, u in enumerate(urls)))
        cpus = int(ray_cluster.cluster_resources()["CPU"])
        units = fetch_units([HandedLink(i, u, "") for i, u in enumerate(urls)], cpus)
        assert len(units) > per_host  # the old code's worst case: per_host requests per unit at once
        for key, value in {**FAST_CRAWL_ENV, "LINKLENS_ARCHIVE_URL": web.archive_url,
                           "LINKLENS_DATA_DIR": str(data_dir), "LINKLENS_PER_HOST_CONCURRENCY": str(per_host)}.items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(app, ["crawl", str(list_file), "--engine", "ray", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["states"] == {"archived": len(urls)}
        peak = dict(web.peak)
    listed = {host_address(h) for h in range(POLITE_HOSTS)}
    assert peak.keys() == listed | {target_address(0), ARCHIVE_ADDRESS}
    assert peak[target_address(0)] == per_host, peak  # reached, never passed: at the redirect target
    assert peak[ARCHIVE_ADDRESS] == per_host, peak  # and at the archive
    assert max(peak[host] for host in listed) <= per_host, peak


@pytest.fixture(scope="module")
def gate(ray_cluster: Any) -> Iterator[Any]:
    """One cluster gate actor for the tests below (one slot per host, short leases); each uses its own host."""
    (actor,) = start_host_gates(ray_cluster, 1, 0.0, 1, lease_s=LEASE_S)
    yield actor
    ray_cluster.kill(actor)


class SlotHolder:
    """Ray actor: a unit that takes a slot through the cluster's gates and holds it until it is killed."""

    async def hold(self, gates: list[Any], host: str) -> None:
        entered = asyncio.Event()

        async def keep() -> None:
            async with ClusterHostGate(gates, 1, 0.0, lease_s=LEASE_S).slot(host):
                entered.set()
                await asyncio.Event().wait()

        self.keeping = asyncio.create_task(keep())
        await entered.wait()


def test_a_slot_held_by_a_killed_unit_comes_back_after_its_lease(ray_cluster: Any, gate: Any) -> None:
    ray = ray_cluster
    assert ray.get(gate.release.remote("given-up")) is None  # released before it was asked for: never granted
    assert ray.get(gate.acquire.remote("blog.example", "given-up"), timeout=DEADLINE_S) is None

    holder = ray.remote(num_cpus=0)(SlotHolder).remote()
    ray.get(holder.hold.remote([gate], "blog.example"), timeout=DEADLINE_S)
    assert ray.get(gate.held.remote()) == {"blog.example": 1}
    waiting = gate.acquire.remote("blog.example", "next")
    # A live holder renews its lease: the slot stays its own for several lease terms.
    ready, _ = ray.wait([waiting], timeout=4 * LEASE_S)
    assert not ready and ray.get(gate.reclaimed_slots.remote()) == 0
    ray.kill(holder)
    assert ray.get(waiting, timeout=DEADLINE_S) is not None
    assert ray.get(gate.reclaimed_slots.remote()) == 1
    ray.get(gate.release.remote("next"))
    deadline = time.monotonic() + DEADLINE_S
    while ray.get(gate.held.remote()):
        assert time.monotonic() < deadline, "a released slot is still held"
        time.sleep(0.01)


def test_crawl_delay_and_retry_after_learnt_by_one_unit_pace_every_unit(ray_cluster: Any, gate: Any) -> None:
    ray = ray_cluster
    crawl_delay_s = push_back_s = 0.2
    unit = ClusterHostGate([gate], 1, 0.0, lease_s=LEASE_S)  # what one unit learns, every unit's slots keep

    def wait_for_pace(delay_s: float, next_start_from: float) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            delay, next_start = ray.get(gate.pace.remote("paced.example"))
            if delay >= delay_s and next_start >= next_start_from:
                return
            assert time.monotonic() < deadline, "the gate never learnt the host's pace"

    def another_units_slot() -> float:
        lease = uuid.uuid4().hex
        granted = ray.get(gate.acquire.remote("paced.example", lease), timeout=DEADLINE_S)
        ray.get(gate.release.remote(lease))
        return float(granted)

    unit.set_min_delay("paced.example", crawl_delay_s)  # the host's robots.txt, read by this unit
    wait_for_pace(crawl_delay_s, 0.0)
    granted = [another_units_slot() for _ in range(3)]
    assert granted[2] - granted[0] >= 2 * crawl_delay_s  # the slot is free at once, the next start is not
    unit.push_back("paced.example", crawl_delay_s + push_back_s)  # a 429 with Retry-After, seen by this unit
    wait_for_pace(crawl_delay_s, granted[2] + crawl_delay_s + push_back_s)  # later than the Crawl-delay alone
    granted.append(another_units_slot())
    assert granted[3] - granted[2] >= crawl_delay_s + push_back_s


def redirect_hosts(web: FixtureWeb) -> dict[str, str]:
    """Listed URL (normalised) -> the host its redirect ends on, for the links that end `redirected`."""
    targets = web.article_urls()
    return {normalise_url(url): urlsplit(targets[article.slug]).netloc
            for url, article in web.expected_content().items() if web.expected_states()[url] == "redirected"}


def finished_hosts(finished: dict[str, str], expected: dict[str, str], leads_to: dict[str, str]) -> set[str]:
    """Hosts (ip:port) with at least `HOST_LINKS` links listed, every link that reaches them finished: the ones
    listed there and the ones whose redirect ends there (an unfinished one would rightly fetch there again)."""
    by_host: dict[str, list[str]] = {}
    for url in expected:
        by_host.setdefault(urlsplit(url).netloc, []).append(url)
    listed = {host: len(urls) for host, urls in by_host.items()}
    for url, host in leads_to.items():
        by_host.setdefault(host, []).append(url)
    return {host for host, urls in by_host.items()
            if listed.get(host, 0) >= HOST_LINKS and all(u in finished for u in urls)}


def requests_by_host(web: FixtureWeb) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in web.request_log():
        netloc = urlsplit(record.url).netloc
        counts[netloc] = counts.get(netloc, 0) + 1
    return counts


def wait_until_cluster_idle(ray: Any) -> None:
    """Until every CPU of the cluster is free: no task or actor of any job (the killed driver's) holds one."""
    total = ray.cluster_resources().get("CPU", 0)
    deadline = time.monotonic() + DEADLINE_S
    while ray.available_resources().get("CPU", 0) < total:
        assert time.monotonic() < deadline, f"the killed driver's tasks still hold CPUs: {ray.available_resources()}"
        time.sleep(0.05)


def test_a_killed_ray_crawl_resumes_without_fetching_finished_hosts_again(
        ray_cluster: Any, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FixtureWeb(n_hosts=4, latency_s=0.15) as web:
        list_file = web.write_list_markdown(tmp_path / "list.md")
        env = {**os.environ, **crawl_env(web, data_dir), "LINKLENS_CONCURRENCY": "2"}
        store_path = data_dir / "linklens.sqlite3"
        # A driver of its own, joining this module's Ray, killed with no goodbye once some links are recorded.
        driver = subprocess.Popen([sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json",
                                   "--engine", "ray", "--ray-address", ray_address(ray_cluster)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        expected = {normalise_url(u): s for u, s in web.expected_states().items()}
        leads_to = redirect_hosts(web)
        deadline = time.monotonic() + DEADLINE_S
        try:
            while not finished_hosts(finished_links(store_path), expected, leads_to):
                assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else ""
                assert time.monotonic() < deadline, "the Ray crawl made no progress"
                time.sleep(0.05)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)
        before_kill = finished_links(store_path)
        assert len(before_kill) < len(expected), "the kill must land midway"
        done_hosts = finished_hosts(before_kill, expected, leads_to)
        # The killed driver's tasks may still be running on the cluster: wait until Ray has ended them
        # (every CPU they held is free again), so none can fetch after the counts below are taken.
        wait_until_cluster_idle(ray_cluster)
        hits_before = requests_by_host(web)
        url_hits_before = {url: web.hits(url) for url in before_kill}

        for key, value in crawl_env(web, data_dir).items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(app, ["crawl", str(list_file), "--engine", "ray", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["crawled"] == len(expected) - len(before_kill)
        assert finished_links(store_path) == expected  # every link once, in its right final state
        hits_after = requests_by_host(web)
        for host in done_hosts:
            assert hits_after.get(host, 0) == hits_before.get(host, 0), f"{host} was fetched again after resume"
        for url, state in before_kill.items():
            if url.startswith("http") and state in ("ok", "redirected"):
                assert web.hits(url) == url_hits_before[url], f"{url} was fetched again after resume"


def linklens_without(*args: str, data_dir: Path, hide_ray: bool = False) -> subprocess.CompletedProcess[str]:
    """`linklens` in a process of its own; with `hide_ray`, as if the extra were not installed."""
    prelude = "import sys; sys.modules['ray'] = None; " if hide_ray else ""  # `import ray` raises ImportError
    code = prelude + f"sys.argv = ['linklens', *{list(args)!r}]; from cli.main import main; main()"
    env = {**os.environ, "LINKLENS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                          timeout=60, env=env)


def test_engine_errors_are_one_sentence(tmp_path: Path, data_dir: Path) -> None:
    listing = tmp_path / "list.md"
    listing.write_text("# L\n\n## S\n\n* [A](http://127.0.0.1:9/a)\n")
    missing = linklens_without("crawl", str(listing), "--engine", "ray", data_dir=data_dir, hide_ray=True)
    assert missing.returncode == 1
    assert "pip install 'linklens[ray]'" in missing.stderr and "Traceback" not in missing.stderr

    started = time.monotonic()
    refused = linklens_without("crawl", str(listing), "--engine", "ray", "--ray-address", "127.0.0.1:9",
                               data_dir=data_dir)
    assert refused.returncode == 1, refused.stderr
    assert "no Ray cluster answers at 127.0.0.1:9" in refused.stderr and "Traceback" not in refused.stderr
    assert time.monotonic() - started < 30  # Ray alone retries for minutes

    bad = linklens_without("crawl", str(listing), "--engine", "ray", "--ray-address", "nonsense", data_dir=data_dir)
    assert bad.returncode == 1 and "bad Ray address 'nonsense'" in bad.stderr, bad.stderr

    unknown = linklens_without("crawl", str(listing), "--engine", "spark", data_dir=data_dir)
    assert unknown.returncode == 2 and "spark" in unknown.stderr and "Traceback" not in unknown.stderr
