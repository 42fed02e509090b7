"""Run the server under uvicorn: one process, or N workers sharing a port.

Why two paths: a single worker can be handed the app object built from the
caller's settings. Worker processes are spawned fresh and can only import the app,
so with workers > 1 the settings travel as `LINKLENS_*` environment variables and
each worker builds its own app through the `app_from_env` factory.
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn

from ingest.settings import Settings
from serve.app import create_app

APP_FACTORY = "serve.app:app_from_env"
DEFAULT_HOST = "127.0.0.1"
GRACEFUL_SHUTDOWN_S = 10


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
        os.environ.update(settings_env(settings))
        uvicorn.run(APP_FACTORY, factory=True, workers=worker_count, **options)
    else:
        uvicorn.run(create_app(settings), **options)
