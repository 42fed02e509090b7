"""Helpers for the serve tests: a real uvicorn subprocess on loopback, and a fake searcher.

The fake is for plumbing only (shedding, 500s, cache, reload polling), where a
real index would make the fault impossible to provoke on demand. Everything about
results and relevance is tested against the real fixture index.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

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


@contextmanager
def run_server(
    data_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None, wait_ready: bool = True
) -> Iterator[ServerProcess]:
    """Start a real server on a free loopback port; wait for /healthz (and /readyz); always stop it."""
    port = free_port()
    full_env = {
        **os.environ,
        "LINKLENS_DATA_DIR": str(data_dir),
        "LINKLENS_RELOAD_INTERVAL_S": TEST_RELOAD_INTERVAL_S,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
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
            ],
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


# -- a fake searcher for plumbing tests ------------------------------------------------------


@dataclass
class FakeResponse:
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.payload)


@dataclass
class FakeSearcher:
    """Answers like `index.search.Searcher`, with knobs to block, fail and change snapshot."""

    snapshot_id: str = "fake-1"
    sections_listed: list[tuple[str, int]] = field(default_factory=lambda: [("Scalability", 3), ("Caching", 2)])
    gate: threading.Event | None = None
    fail_with: BaseException | None = None
    calls: int = 0
    next_snapshot: str | None = None

    def search(self, query: str, k: int = 10, section: str | None = None, host: str | None = None) -> FakeResponse:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with
        hit = {
            "rank": 1,
            "url": "https://example.com/a",
            "title": "<b>Sharding</b> & friends",
            "section": section or "Scalability",
            "host": "example.com",
            "score": 0.9,
            "snippet": f"about **{query.split()[0]}** and <script>alert(1)</script>",
            "archived_url": None,
        }
        return FakeResponse({"query": query, "took_ms": 1.0, "results": [hit][:k]})

    def sections(self) -> list[tuple[str, int]]:
        return list(self.sections_listed)

    def article(self, article_id: int) -> dict[str, Any] | None:
        return {"id": article_id, "passages": []} if article_id == 1 else None

    def similar(self, article_id: int, k: int = 10) -> FakeResponse:
        return self.search("similar", k=k)

    def stats(self) -> dict[str, Any]:
        return {"articles": 5, "passages": 21}

    def reload_if_changed(self) -> bool:
        if self.next_snapshot is None:
            return False
        self.snapshot_id, self.next_snapshot = self.next_snapshot, None
        return True
