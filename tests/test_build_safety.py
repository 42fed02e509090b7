"""Concurrent and killed builds: one build at a time, and SIGKILL mid-build never disturbs what is served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from index import snapshot
from index.build import build_index
from index.search import Searcher
from index.vector_file import HEADER_BYTES
from ingest.errors import BuildLockedError
from ingest.models import ListedLink, ListPlacement
from ingest.settings import Settings
from ingest.store import Store
from tests.index_fixtures import fill_store

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, searcher, seeded_settings

REPO = Path(__file__).resolve().parents[1]
# Enough uncached links that the killed build is still embedding after its first batch is on disk.
SLOW_LINKS = 2500
MIDWAY_TIMEOUT_S = 180.0
TOPICS = ("queues", "caches", "replicas", "shards", "leases", "quorums", "indexes", "logs")


def slow_links() -> list[ListedLink]:
    def title(n: int) -> str:
        return f"Note {n} on {TOPICS[n % len(TOPICS)]} and {TOPICS[n // 8 % 8]}"

    return [
        ListedLink(f"https://notes{n % 20}.example.org/n/{n}", [ListPlacement(("Generated",), title(n), 10**5 + n)])
        for n in range(SLOW_LINKS)
    ]


def half_written(snapshots_dir: Path) -> Path | None:
    """A build's temporary folder once its first batch of vectors is on disk."""
    for work in snapshots_dir.glob(f"{snapshot.TEMP_PREFIX}*"):
        vectors = work / snapshot.VECTORS_FILE
        if vectors.exists() and vectors.stat().st_size > HEADER_BYTES:
            return work
    return None


@pytest.mark.slow
def test_a_second_build_is_refused_and_a_killed_build_changes_nothing(seeded_settings: Settings) -> None:
    settings = seeded_settings
    with Store.open(settings.store_path) as store:
        fill_store(store)
        good = build_index(settings, store).snapshot_id
        store.add_links(slow_links(), source="generated-notes.md")  # a second list: the fixture list stays
    env = {**os.environ, "LINKLENS_DATA_DIR": str(settings.data_dir)}
    build = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "index"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + MIDWAY_TIMEOUT_S
        while (work := half_written(settings.snapshots_dir)) is None:
            assert build.poll() is None, build.stderr.read().decode() if build.stderr else ""
            assert time.monotonic() < deadline, "the build never got half-way"
            time.sleep(0.05)

        with Store.open(settings.store_path) as store, pytest.raises(BuildLockedError) as refused:
            build_index(settings, store)
        message = str(refused.value)
        assert f"pid {build.pid}" in message and "wait for it to finish" in message, message
        assert snapshot.current_id(settings.snapshots_dir) == good
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=30)
    assert build.returncode == -signal.SIGKILL

    assert work.exists()  # the killed build's half-written folder is still there...
    assert snapshot.current_id(settings.snapshots_dir) == good  # ...but CURRENT never moved
    assert snapshot.list_ids(settings.snapshots_dir) == [good]  # and nothing half-written is listed
    searcher = Searcher.open(settings)
    assert searcher.snapshot_id == good and searcher.search("raft leader election", k=3).results
    searcher.close()

    with Store.open(settings.store_path) as store:
        store._conn.execute("DELETE FROM links WHERE url LIKE 'https://notes%'")
        after = build_index(settings, store)  # the kernel released the dead build's lock
    assert after.snapshot_id != good and snapshot.current_id(settings.snapshots_dir) == after.snapshot_id
    assert not work.exists()  # the next build removed the leftover
