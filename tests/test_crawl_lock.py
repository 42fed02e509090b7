"""One writer per data folder: a second crawl stops at once, naming the crawl that holds the lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ingest.folder_lock import CRAWL_LOCK_FILE
from tests.conftest import FAST_CRAWL_ENV

REPO = Path(__file__).resolve().parents[1]
LOCK_TAKEN_TIMEOUT_S = 120.0
runner = CliRunner()


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A loopback port that accepts connections (in the kernel's backlog) and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server
    server.close()


def wait_for_holder(lock: Path, pid: int, crawl: subprocess.Popen[bytes]) -> str:
    """The lock file's words once the crawl `pid` holds the lock."""
    deadline = time.monotonic() + LOCK_TAKEN_TIMEOUT_S
    while True:
        words = lock.read_text() if lock.exists() else ""
        if f"pid {pid}," in words:
            return words
        assert crawl.poll() is None, crawl.stderr.read().decode() if crawl.stderr else ""
        assert time.monotonic() < deadline, "the first crawl never took the crawl lock"
        time.sleep(0.05)


def test_a_second_crawl_stops_at_once_naming_the_first_and_the_lock_is_released_on_exit_and_after_sigkill(
        silent_server: socket.socket, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = silent_server.getsockname()
    list_file = tmp_path / "stuck.md"
    list_file.write_text(f"# Stuck\n\n## Reading\n\n* [A page that never answers](http://{host}:{port}/page)\n")
    env = {**os.environ, "LINKLENS_DATA_DIR": str(data_dir), "LINKLENS_READ_TIMEOUT_S": "600",
           "LINKLENS_REQUEST_TIMEOUT_S": "600", "LINKLENS_USE_ARCHIVE": "false"}
    first = subprocess.Popen([sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json"], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        words = wait_for_holder(data_dir / CRAWL_LOCK_FILE, first.pid, first)
        assert "since 20" in words and "UTC" in words, words

        second = runner.invoke(app, ["crawl", str(list_file), "--json"])
        assert second.exit_code == 1, second.output
        assert f"another crawl (pid {first.pid}, since " in second.output, second.output
        assert "wait for it to finish" in second.output
        assert "Traceback" not in second.output
        assert first.poll() is None  # refused while the first crawl still runs: it did not wait for it

        reextract = runner.invoke(app, ["crawl", "--reextract"])
        assert reextract.exit_code == 1 and f"pid {first.pid}" in reextract.output, reextract.output
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    # the kernel released the killed crawl's lock: the next crawl runs (its host now refuses at once)
    silent_server.close()
    for key, value in FAST_CRAWL_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LINKLENS_USE_ARCHIVE", "false")
    after_kill = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert after_kill.exit_code == 0, after_kill.output
    # and a crawl that ended normally released it too
    again = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert again.exit_code == 0, again.output
    assert (data_dir / CRAWL_LOCK_FILE).read_text() == ""  # no holder left behind


def test_the_ray_index_exports_articles_only_under_the_build_lock(data_dir: Path) -> None:
    """Another build holds the lock: the Ray index stops before its export touches `articles/`."""
    from cli.engines.datasets import ARTICLES
    from cli.engines.ray_index import run_ray_index
    from index import snapshot
    from ingest.errors import BuildLockedError
    from ingest.models import ListedLink, ListPlacement
    from ingest.settings import load_settings
    from ingest.store import Store

    settings = load_settings()
    with Store.open(settings.store_path) as store:
        store.add_links([ListedLink("http://x.test/1", [ListPlacement(("Reading",), "One", 0)])])
    articles = Path(settings.datasets_location) / ARTICLES
    articles.mkdir(parents=True)
    (articles / "part-000000.parquet").write_bytes(b"the export a running build reads")
    with snapshot.build_lock(settings.snapshots_dir), pytest.raises(BuildLockedError) as refused:
        run_ray_index(settings, rebuild=False, quiet=True)
    assert f"another build (pid {os.getpid()}, since " in str(refused.value)
    assert (articles / "part-000000.parquet").read_bytes() == b"the export a running build reads"
    assert sorted(p.name for p in articles.parent.iterdir()) == [ARTICLES]  # no export was even started
