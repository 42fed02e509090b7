"""Run the server: one uvicorn process, or N workers forked from one loaded parent.

One worker: uvicorn serves the app built from the caller's settings. Several:
gunicorn's arbiter forks them from this process after it has imported the server
and opened the snapshot, so they share those pages (`serve/prefork.py` says what
is shared and what each worker reopens); a worker that dies is replaced.

Each worker polls `CURRENT` and swaps on its own, and sheds load on its own
(`LINKLENS_MAX_INFLIGHT` is per worker). Their metrics meet in one folder
(prometheus-client's multiprocess mode, see `serve/metrics.py`), made for the run
and named in the environment before prometheus-client is imported: so this module
imports the app (and with it prometheus-client) only inside `run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from ingest.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
GRACEFUL_SHUTDOWN_S = 10
# serve.metrics.MULTIPROC_DIR_ENV, spelled here: importing serve.metrics would import prometheus-client too early.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as the environment variables `load_settings()` reads back to equal values."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"LINKLENS_{name.upper()}"] = str(value)
    return env


def run(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted. Binds 127.0.0.1 unless a host is given (here or in settings)."""
    bind_host = host or settings.host or DEFAULT_HOST
    bind_port = port if port is not None else settings.port
    worker_count = workers if workers is not None else settings.workers
    options: dict[str, Any] = {
        "host": bind_host,
        "port": bind_port,
        "log_level": log_level,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
    }
    if worker_count > 1:
        with worker_metrics_dir() as folder:
            from serve.prefork import PreforkServer, bind_address

            PreforkServer(settings, bind_address(bind_host, bind_port), worker_count, log_level, folder).run()
        return
    from serve.app import create_app

    if os.environ.get(MULTIPROC_DIR_ENV):
        with worker_metrics_dir():  # an operator's folder: one worker, but still emptied for this run
            uvicorn.run(create_app(settings), **options)
    else:
        uvicorn.run(create_app(settings), **options)


@contextlib.contextmanager
def worker_metrics_dir() -> Iterator[Path]:
    """The run's metrics folder, empty at start, named in `PROMETHEUS_MULTIPROC_DIR` for the workers.

    The operator's folder if they set one (its `*.db` files are removed, the
    folder kept: prometheus-client requires a clean one per run); otherwise a
    fresh temporary folder, removed when the server stops. Set before any worker
    starts, because prometheus-client reads it once, at import.
    """
    given = os.environ.get(MULTIPROC_DIR_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="linklens-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_DIR_ENV] = str(folder)
    logger.info("worker metrics in %s", folder)
    try:
        yield folder
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
            del os.environ[MULTIPROC_DIR_ENV]
