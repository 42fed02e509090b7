"""Shared fixtures. Every test gets its own data folder through LINKLENS_DATA_DIR (never the user's)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Every Ray a test starts binds and talks on 127.0.0.1 only, even one started without `ray_processes_started`
# and in a child process: Ray's local-only mode, read once when Ray is imported, so set before anything imports
# it (`cli.engines.ray_runtime.pin_to_loopback` says why).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

# Fixture modules that test modules load with `pytest_plugins` (and import from): rewrite their asserts too.
pytest.register_assert_rewrite("tests.index_fixtures", "tests.serve_fixtures", "tests.ray_fixtures",
                               "tests.cluster_fixtures")

from ingest.settings import (  # noqa: E402 - after register_assert_rewrite
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    Settings,
    load_settings,
)
from ingest.store import Store  # noqa: E402
from tests.fixtureweb import FixtureWeb  # noqa: E402

# Crawl settings for loopback: short timeouts and backoff so fault tests take seconds, not minutes.
FAST_CRAWL_ENV = {
    "LINKLENS_PER_HOST_DELAY_S": "0.01",
    "LINKLENS_CONNECT_TIMEOUT_S": "2",
    "LINKLENS_READ_TIMEOUT_S": "0.8",
    "LINKLENS_REQUEST_TIMEOUT_S": "2",
    "LINKLENS_MAX_ATTEMPTS": "2",
    "LINKLENS_BACKOFF_BASE_S": "0.05",
    "LINKLENS_BACKOFF_MAX_S": "0.3",
    "LINKLENS_MAX_RETRY_AFTER_S": "2",
    "LINKLENS_EXTRACT_WORKERS": "2",
    "LINKLENS_SECOND_TRY_AFTER_S": "0.2",
}
# The production deadlines, over FAST_CRAWL_ENV for crawls where nothing stalls on purpose and every
# state is asserted: there a sub-second deadline only lets a busy machine turn a slow answer into a
# timeout (a retry, a failed link); the longer ones cost nothing, since every answer comes at once.
PATIENT_DEADLINES_ENV = {
    "LINKLENS_CONNECT_TIMEOUT_S": str(DEFAULT_CONNECT_TIMEOUT_S),
    "LINKLENS_READ_TIMEOUT_S": str(DEFAULT_READ_TIMEOUT_S),
    "LINKLENS_REQUEST_TIMEOUT_S": str(DEFAULT_REQUEST_TIMEOUT_S),
}


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point linklens at a fresh folder for each test, so no test sees another's store or index."""
    path = tmp_path / "linklens-data"
    monkeypatch.setenv("LINKLENS_DATA_DIR", str(path))
    return path


@dataclass
class CrawledWeb:
    """A fixture web crawled once, shared by tests that only read the outcome."""

    web: FixtureWeb
    settings: Settings
    list_file: Path
    report: dict[str, dict[str, object]]


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrawledWeb]:
    """Crawl the fixture web once per module through the CLI, as a user would."""
    from typer.testing import CliRunner

    from cli.main import app

    root = tmp_path_factory.mktemp("crawled")
    with FixtureWeb(n_hosts=4) as fixture_web, pytest.MonkeyPatch.context() as mp:
        env = dict(FAST_CRAWL_ENV, LINKLENS_ARCHIVE_URL=fixture_web.archive_url,
                   LINKLENS_DATA_DIR=str(root / "data"))
        for key, value in env.items():
            mp.setenv(key, value)
        list_file = fixture_web.write_list_markdown(root / "awesome-fixture.md")
        result = CliRunner().invoke(app, ["crawl", str(list_file), "--json"])
        assert result.exit_code == 0, result.output
        settings = load_settings()
        with Store.open(settings.store_path) as store:
            report = {str(r["url"]): r for r in store.link_rows()}
        yield CrawledWeb(fixture_web, settings, list_file, report)


@pytest.fixture
def web() -> Iterator[FixtureWeb]:
    """A fresh fixture web per test: fault counters (503-then-200, 429) start from zero."""
    with FixtureWeb(n_hosts=4) as fixture_web:
        yield fixture_web


@pytest.fixture
def crawl_env(web: FixtureWeb, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for crawling the fixture web fast, with its fake web archive."""
    env = dict(FAST_CRAWL_ENV, LINKLENS_ARCHIVE_URL=web.archive_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def crawl_settings(crawl_env: dict[str, str], data_dir: Path) -> Settings:
    return load_settings()


@pytest.fixture
def list_file(web: FixtureWeb, tmp_path: Path) -> Path:
    return web.write_list_markdown(tmp_path / "awesome-fixture.md")


def finished_links(store_path: Path) -> dict[str, str]:
    """Read finished links from another process's store, as an outside observer would."""
    if not store_path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT url, state FROM links WHERE state != 'pending'").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not created yet
        return {}
    return dict(rows)
