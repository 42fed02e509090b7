"""2,000 distinct hosts within `ulimit -n 1024`: idle per-origin pools are closed, least recently used first.

Without that (LINKLENS_MAX_HOST_POOLS=10000), about half the links end pending: every connection
after the thousandth fails with "too many open files".
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_CRAWL_ENV, PATIENT_DEADLINES_ENV
from tests.hostileweb.many_hosts import ManyHosts

HOSTS = 2000
FD_LIMIT = 1024
DEADLINE_S = 600


def limit_open_files() -> None:
    """In the crawl's own process: a soft limit of 1024 open files, the common default."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


def crawl_many(tmp_path: Path, data_dir: Path, **extra_env: str) -> tuple[dict[str, int], int]:
    """Crawl 2,000 hosts in a process limited to 1024 open files; its final states and the requests served."""
    with ManyHosts() as web:
        listing = ["# Many Hosts", "", "## Hosts", ""] + [f"* [Host {i}]({web.url(i)})" for i in range(HOSTS)]
        list_file = tmp_path / "many.md"
        list_file.write_text("\n".join(listing) + "\n")
        # Every host answers at once: the production deadlines (the baseline run at load ~80 had links fail
        # on FAST_CRAWL_ENV's 0.8 s read timeout); running out of files fails at once whatever the deadline.
        env = {**os.environ, **FAST_CRAWL_ENV, **PATIENT_DEADLINES_ENV, "LINKLENS_DATA_DIR": str(data_dir),
               "LINKLENS_PER_HOST_DELAY_S": "0", "LINKLENS_USE_ARCHIVE": "false", **extra_env}
        done = subprocess.run([sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json"], env=env,
                              capture_output=True, text=True, timeout=DEADLINE_S, preexec_fn=limit_open_files)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)["states"], web.requests


@pytest.mark.slow
def test_two_thousand_hosts_crawl_within_1024_open_files(tmp_path: Path, data_dir: Path) -> None:
    states, requests = crawl_many(tmp_path, data_dir)
    assert states == {"ok": HOSTS}
    assert requests >= 2 * HOSTS  # robots.txt and the page of every host
