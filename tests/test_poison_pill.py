"""A link whose fetch kills the crawler (SIGKILL, as the OOM killer would) is not fetched forever.

The store marks a link in flight before its fetch; a link in flight at two deaths ends `failed` on
the next run, and its neighbours end as they would have without it. The death is the crawler's test
hook (`ingest.crawler.DIE_ON_URL_TEST_ENV`), in a real `linklens crawl` process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from ingest.crawler import DIE_ON_URL_TEST_ENV
from ingest.store import DIED_TWICE_REASON, Store
from ingest.urls import normalise_url
from tests.conftest import FAST_CRAWL_ENV
from tests.fixtureweb import FixtureWeb

RUN_TIMEOUT_S = 120
LISTED = 6


def crawl(env: dict[str, str], list_file: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):  # extraction workers a killed crawler left behind
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_link_that_kills_the_crawler_twice_ends_failed_and_its_neighbours_ok(tmp_path: Path,
                                                                               data_dir: Path) -> None:
    with FixtureWeb(n_hosts=2) as web:
        urls = [normalise_url(u) for u in list(web.article_urls().values())[:LISTED]]
        poison = urls[2]
        list_file = tmp_path / "list.md"
        list_file.write_text("# Awesome Poison\n\n## Posts\n\n" + "".join(f"* [Post {i}]({u})\n"
                                                                       for i, u in enumerate(urls)))
        env = dict(os.environ, **FAST_CRAWL_ENV, LINKLENS_ARCHIVE_URL=web.archive_url,
                   LINKLENS_DATA_DIR=str(data_dir), LINKLENS_CONCURRENCY="2")
        env[DIE_ON_URL_TEST_ENV] = poison.split("://", 1)[1]

        for run in (1, 2):
            died = crawl(env, list_file)
            assert died.returncode == -signal.SIGKILL, (run, died.returncode, died.stderr[-2000:])
            with Store.open(data_dir / "linklens.sqlite3") as store:
                poison_row = next(r for r in store.link_rows() if r["url"] == poison)
            assert poison_row["state"] == "pending", (run, poison_row)

        done = crawl(env, list_file)
        assert done.returncode == 0, done.stderr[-2000:]
        with Store.open(data_dir / "linklens.sqlite3") as store:
            rows = {str(r["url"]): r for r in store.link_rows()}
        assert rows[poison]["state"] == "failed"
        assert rows[poison]["reason"] == DIED_TWICE_REASON
        assert "died while fetching it, twice" in DIED_TWICE_REASON
        neighbours = {u: rows[u]["state"] for u in urls if u != poison}
        assert neighbours == dict.fromkeys(neighbours, "ok")

        # a fourth run has nothing left to do, and does not fetch the poison again
        again = crawl(env, list_file)
        assert again.returncode == 0, again.stderr[-2000:]


def test_only_a_link_in_flight_at_two_deaths_is_failed(tmp_path: Path) -> None:
    """The counting itself: an outcome or being set aside for a second try ends a link's time in flight."""
    from ingest.crawler import links_to_crawl
    from ingest.models import CrawlOutcome, LinkState, ListedLink, ListPlacement

    urls = [f"http://127.0.0.1:9/{name}" for name in ("poison", "finished", "set-aside", "once")]
    with Store.open(tmp_path / "store.sqlite3") as store:
        store.add_links([ListedLink(u, [ListPlacement(("S",), u, i)]) for i, u in enumerate(urls)])
        ids = {str(r["url"]).rsplit("/", 1)[1]: int(r["id"]) for r in store.link_rows()}  # type: ignore[arg-type]
        for _ in range(2):  # two crawls died with these in flight ...
            for name in ("poison", "finished", "set-aside"):
                store.fetch_started(ids[name])
            store.record_outcome(ids["finished"], CrawlOutcome(LinkState.OK, "HTTP 200"))  # ... after this one ended
            store.fetch_set_aside(ids["set-aside"])  # ... and this one waited for its host's second try
        store.fetch_started(ids["once"])
        assert store.links_in_doubt(ids.values()) == {ids["poison"], ids["once"]}

        pending = links_to_crawl(store, refresh=False, retry_failed=False)
        states = {name: store.link(i)["state"] for name, i in ids.items()}
        assert states == {"poison": "failed", "finished": "ok", "set-aside": "pending", "once": "pending"}
        assert store.link(ids["poison"])["reason"] == DIED_TWICE_REASON
        assert sorted(pending) == sorted([ids["set-aside"], ids["once"]])
        assert store.links_in_doubt(pending) == {ids["once"]}
