"""A crawl killed with SIGKILL midway resumes where it stopped: nothing finished is fetched again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.store import Store
from ingest.urls import normalise_url
from tests.conftest import FAST_CRAWL_ENV, finished_links
from tests.fixtureweb import FixtureWeb

KILL_AFTER_FINISHED = 12
DEADLINE_S = 60


def crawl_command(list_file: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json"]


@pytest.mark.slow
def test_crawl_killed_midway_resumes_without_refetching(tmp_path: Path, data_dir: Path) -> None:
    with FixtureWeb(n_hosts=4, latency_s=0.15) as web:
        list_file = web.write_list_markdown(tmp_path / "list.md")
        env = dict(os.environ, **FAST_CRAWL_ENV, LINKLENS_ARCHIVE_URL=web.archive_url,
                   LINKLENS_DATA_DIR=str(data_dir), LINKLENS_CONCURRENCY="4")
        store_path = data_dir / "linklens.sqlite3"
        proc = subprocess.Popen(crawl_command(list_file), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + DEADLINE_S
        try:
            while len(finished_links(store_path)) < KILL_AFTER_FINISHED:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "crawl made no progress"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the crawler and its extraction workers, no goodbye
            proc.wait(10)
        before_kill = finished_links(store_path)
        total = len(web.expected_states())
        assert KILL_AFTER_FINISHED <= len(before_kill) < total, "kill must land midway"
        hits_before = {url: web.hits(url) for url in before_kill}

        done = subprocess.run(crawl_command(list_file), env=env, capture_output=True, timeout=DEADLINE_S)
        assert done.returncode == 0, done.stderr.decode()

        after = finished_links(store_path)
        expected = {normalise_url(u): s for u, s in web.expected_states().items()}
        assert after == expected  # every link exactly once, in its right final state
        for url, state in before_kill.items():
            if url.startswith("http") and state in ("ok", "redirected"):
                assert web.hits(url) == hits_before[url], f"{url} was fetched again after resume"
        with Store.open(store_path) as store:
            documents = sum(1 for a in store.articles() if a.document is not None)
        assert documents == sum(1 for s in expected.values() if s in ("ok", "redirected", "archived"))
