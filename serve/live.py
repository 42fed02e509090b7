"""The searcher the server answers from: possibly absent, and replaced under traffic.

Why a holder instead of a plain attribute: the server must start before anything
is built (readiness says 503 until then) and pick up new snapshots without a
restart. The holder opens the index when it appears and asks an open searcher to
swap to newer snapshots; the swap itself is atomic inside `Searcher`, so a search
already running finishes on the snapshot it started with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ingest.errors import LinklensError, NotBuiltError
from ingest.settings import Settings

if TYPE_CHECKING:
    from index.search import Searcher

logger = logging.getLogger(__name__)

SearcherOpener = Callable[[Settings], "Searcher"]
# Told which searcher is served after every change (None: none); metrics listen.
ServingListener = Callable[["Searcher | None"], None]


def _ignore(searcher: Searcher | None) -> None:
    pass


def open_searcher(settings: Settings) -> Searcher:
    """The real opener. Imported late so importing `serve` does not load the model stack."""
    from index.search import Searcher

    return Searcher.open(settings)


class LiveIndex:
    """Holds the current `Searcher` (or the reason there is none) for one app."""

    def __init__(
        self, settings: Settings, opener: SearcherOpener = open_searcher, on_serving: ServingListener = _ignore
    ) -> None:
        self._settings = settings
        self._opener = opener
        self._on_serving = on_serving
        self._searcher: Searcher | None = None
        self._unavailable: LinklensError = not_built_error(settings)
        self._reload_problem: str | None = None

    @property
    def searcher(self) -> Searcher | None:
        return self._searcher

    @property
    def snapshot_id(self) -> str | None:
        searcher = self._searcher
        return str(searcher.snapshot_id) if searcher is not None else None

    def require(self) -> Searcher:
        """The searcher, or the error that explains why there is none (503, names `linklens build`)."""
        searcher = self._searcher
        if searcher is None:
            raise self._unavailable
        return searcher

    def refresh(self) -> bool:
        """Open the index if none is loaded, else let the searcher swap to a newer snapshot.

        Blocking (reads files, may load a model): call it from a worker thread.
        Returns True when the served snapshot changed. A snapshot that cannot be used
        keeps the server on the old one (or unready) and is logged, never raised: the
        poller must survive a half-finished or mismatched build.
        """
        if self._searcher is None:
            try:
                self._searcher = self._opener(self._settings)
            except LinklensError as exc:
                if not isinstance(exc, NotBuiltError) and str(exc) != str(self._unavailable):
                    logger.warning("index not usable: %s", exc)
                self._unavailable = exc
                return False
            logger.info("serving snapshot %s", self.snapshot_id)
            self._on_serving(self._searcher)
            return True
        try:
            changed = bool(self._searcher.reload_if_changed())
        except LinklensError as exc:
            if str(exc) != self._reload_problem:  # once per problem, not once per poll
                logger.warning("staying on snapshot %s: %s", self.snapshot_id, exc)
            self._reload_problem = str(exc)
            return False
        self._reload_problem = None
        if changed:
            logger.info("reloaded: now serving snapshot %s", self.snapshot_id)
            self._on_serving(self._searcher)
        return changed

    def close(self) -> None:
        """Release the searcher's files at shutdown."""
        searcher, self._searcher = self._searcher, None
        if searcher is not None:
            self._on_serving(None)
            searcher.close()

    async def poll(self, interval_s: float) -> None:
        """Refresh every `interval_s` until cancelled (the app's lifespan owns the task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except Exception:
                # A bug in a reload must not silently stop all future reloads; log it loudly, keep polling.
                logger.exception("index reload failed; will retry in %.1f s", interval_s)


def not_built_error(settings: Settings) -> NotBuiltError:
    return NotBuiltError(f"no index in {settings.data_dir} yet — run: linklens build")
