"""`linklens serve --workers N`: workers forked from one parent that has already loaded everything.

Why fork after load: uvicorn's own `--workers` starts fresh interpreters, each
importing the libraries and opening the snapshot (its ONNX encoder above all) into
private memory: four workers cost 3.4× one. Here gunicorn's arbiter (its
`--preload` way, with uvicorn's worker class) forks the workers from a parent
that has imported the server and opened the snapshot once, so they share those
pages copy-on-write; `gc.freeze()` keeps the garbage collector from touching
(and so copying) the parent's objects in every worker.

What must not cross a fork is reopened in each worker (`Searcher.after_fork`: the
SQLite connection, the BM25 thread pool, the locks). Nothing else in the parent
has run a thread pool by then: the ONNX session and FAISS run with one thread
each, and numpy's BLAS is limited to one before the snapshot is opened. Everything
else is the worker's own and made after the fork: the app (`create_app`, the one
factory), its metrics (written to the shared multiprocess folder under the
worker's own pid), gate, cache and snapshot poller. So each worker reloads new
snapshots, sheds load and counts its metrics exactly as a single server does.

The arbiter replaces a worker that dies (a SIGKILL, a crash) with a new fork of
the same parent, which first moves to the current snapshot (`pre_fork`); the new
worker checks again before it answers (`InheritedSearcher`), and `child_exit`
drops the dead worker's live gauges.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from prometheus_client.multiprocess import mark_process_dead
from uvicorn_worker import UvicornWorker

from ingest.errors import LinklensError
from ingest.settings import Settings
from serve.app import create_app
from serve.live import open_searcher
from serve.mcp_deferred import preload_sdk

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI

    from index.search import Searcher

logger = logging.getLogger(__name__)

WORKER_CLASS = "serve.prefork.LinklensWorker"
GRACEFUL_SHUTDOWN_S = 10
# gunicorn restarts a worker silent for this long (uvicorn's worker reports in between).
WORKER_TIMEOUT_S = 30


class LinklensWorker(UvicornWorker):
    """uvicorn's gunicorn worker with the options the single-process server uses."""

    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGQUIT, the arbiter's quick stop (on its SIGINT), stops uvicorn as SIGTERM does.

        uvicorn's worker only marks itself not alive on SIGQUIT, which its server
        never reads: the worker kept serving until the arbiter's SIGKILL, or for
        ever if the arbiter was killed first. SIGTERM is uvicorn's graceful stop:
        running requests finish and the app's shutdown (metrics, files) runs.
        """
        super().handle_exit(sig, frame)
        signal.raise_signal(signal.SIGTERM)

    async def callback_notify(self) -> None:
        """uvicorn's periodic check-in with the arbiter; a worker whose arbiter is gone stops itself."""
        if os.getppid() != self.ppid:
            logger.warning("the server's parent process %s is gone; worker %s stops", self.ppid, self.pid)
            signal.raise_signal(signal.SIGTERM)
            return
        await super().callback_notify()


class InheritedSearcher:
    """The opener of a forked worker: the parent's searcher first (reopened for this process), then fresh ones.

    The parent opened its searcher when the server started; a worker forked later
    (a replacement) swaps to the snapshot `CURRENT` names now before it answers.
    """

    def __init__(self, searcher: Searcher | None) -> None:
        self._searcher = searcher

    def __call__(self, settings: Settings) -> Searcher:
        searcher, self._searcher = self._searcher, None
        if searcher is None:
            return open_searcher(settings)
        searcher.after_fork()
        try:
            searcher.reload_if_changed()
        except LinklensError as exc:  # the poller retries and logs; serve the inherited snapshot meanwhile
            logger.warning("staying on snapshot %s: %s", searcher.snapshot_id, exc)
        return searcher


class PreforkServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's arbiter over `workers` forks of this process, each serving `create_app(settings)`."""

    def __init__(self, settings: Settings, bind: str, workers: int, log_level: str, metrics_dir: Path) -> None:
        self._settings = settings
        self._options: dict[str, Any] = {
            "bind": [bind],
            "workers": workers,
            "worker_class": WORKER_CLASS,
            "loglevel": log_level,
            "graceful_timeout": GRACEFUL_SHUTDOWN_S,
            "timeout": WORKER_TIMEOUT_S,
            "control_socket_disable": True,  # else every server on the box would share one socket in $HOME
            "pre_fork": self._refresh_before_fork,
            "child_exit": lambda arbiter, worker: mark_process_dead(worker.pid, str(metrics_dir)),
        }
        self._searcher = _open_before_fork(settings)
        preload_sdk()
        super().__init__()

    def _refresh_before_fork(self, arbiter: Any, worker: Any) -> None:
        """Before each fork (a replacement too): move the parent to the current snapshot, so the new
        worker inherits the snapshot it will serve rather than one a later build may have deleted."""
        if self._searcher is None:
            return
        try:
            self._searcher.reload_if_changed()
        except LinklensError as exc:  # the worker retries on its own; the parent keeps what it has
            logger.warning("parent stays on snapshot %s: %s", self._searcher.snapshot_id, exc)

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> FastAPI:
        """Called in each worker, after the fork: the worker's own app over the inherited searcher."""
        return create_app(self._settings, opener=InheritedSearcher(self._searcher))

    def run(self) -> None:
        gc.collect()
        gc.freeze()  # the parent's objects stay out of every worker's collections, so their pages stay shared
        super().run()


def _open_before_fork(settings: Settings) -> Searcher | None:
    """The snapshot opened once in the parent; None when there is none yet (workers open it when it appears)."""
    try:
        return open_searcher(settings)
    except LinklensError as exc:
        logger.info("no snapshot to share before forking (%s); each worker opens it when it appears", exc)
        return None


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
