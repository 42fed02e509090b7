"""Fixtures for the serve tests: real uvicorn subprocesses on loopback over the real fixture index.

Test modules load this file with `pytest_plugins = ["tests.serve_fixtures"]` and use
only its fixtures (types under TYPE_CHECKING): an imported session fixture is
registered once per importing module and so runs once per module (the index build
alone takes ~20-30 s), and a module imported before pytest loads it as a plugin
loses assertion rewriting.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ingest.models import Article
from ingest.settings import load_settings
from ingest.store import Store

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex

pytest_plugins = ["tests.index_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 10.0
# Fast reloads in tests; the production default is seconds.
TEST_RELOAD_INTERVAL_S = "0.2"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running `uvicorn serve.app:app_from_env --factory` and its base URL."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def uvicorn_command(port: int) -> list[str]:
    """The server as an operator would start it with the uvicorn CLI and the app factory."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "serve.app:app_from_env",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


@contextmanager
def run_server(
    data_dir: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    command: Callable[[int], list[str]] = uvicorn_command,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Start a real server on loopback (`port`, else a free one); wait for /healthz (and /readyz); always stop it."""
    port = port or free_port()
    full_env = {
        **os.environ,
        "LINKLENS_DATA_DIR": str(data_dir),
        "LINKLENS_RELOAD_INTERVAL_S": TEST_RELOAD_INTERVAL_S,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}-{len(list(log_dir.glob(f'server-{port}-*.log')))}.log"  # restarts: a new log
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(port),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_until_up(server, "/readyz" if wait_ready else "/healthz")
        yield server
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def _wait_until_up(server: ServerProcess, path: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            response = httpx.get(server.base_url + path, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"server not up on {path} after {SERVER_START_TIMEOUT_S}s ({last}):\n{server.log()}")


@pytest.fixture(scope="session")
def live_server(built: BuiltIndex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the session's fixture index, shared by every serve test module."""
    with run_server(built.settings.data_dir, tmp_path_factory.mktemp("serve-logs")) as server:
        yield server


ServerStarter = Callable[..., AbstractContextManager[ServerProcess]]


@pytest.fixture
def start_server(tmp_path: Path) -> ServerStarter:
    """`start_server(data_dir, env=None, wait_ready=True, command=...)`: a private server, logs in tmp_path."""

    def start(
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
        command: Callable[[int], list[str]] = uvicorn_command,
    ) -> AbstractContextManager[ServerProcess]:
        return run_server(data_dir, tmp_path / "server-logs", env=env, wait_ready=wait_ready, command=command)

    return start


@pytest.fixture
def private_data_dir(built: BuiltIndex, tmp_path: Path) -> Path:
    """A copy of the session's built data folder that this test may rebuild."""
    return copy_data_dir(built, tmp_path / "private-data")


def copy_data_dir(source: BuiltIndex, target: Path) -> Path:
    """A private copy of the session's data folder that a test may rebuild.

    The store is copied (SQLite writes in place); snapshots are immutable and the
    ONNX export is read-only, so those are hard-linked to keep the copy instant.
    """
    from tests.index_fixtures import seed_caches  # loaded (and assert-rewritten) as a plugin by now

    settings = source.settings
    target.mkdir(parents=True)
    shutil.copy2(settings.store_path, target / settings.store_path.name)
    shutil.copytree(settings.snapshots_dir, target / settings.snapshots_dir.name, copy_function=os.link)
    seed_caches(settings, load_settings(data_dir=target))
    return target


def change_one_article(store: Store, paragraph: str) -> Article:
    """Append `paragraph` to the first article with text, and return it: the smallest change a rebuild
    publishes as a new snapshot (the reload, worker and replica tests, and bench/replicas.py)."""
    article = next(a for a in store.articles() if a.document is not None)
    assert article.document is not None
    article.document.text += "\n\n" + paragraph
    store.replace_document(article.link_id, article.document)
    return article
