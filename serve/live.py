"""The searcher the server answers from: possibly absent, and replaced under traffic.

Why a holder instead of a plain attribute: the server must start before anything
is built (readiness says 503 until then) and pick up new snapshots without a
restart. The holder opens the index when it appears and asks an open searcher to
swap to newer snapshots; the swap itself is atomic inside `Searcher`, so a search
already running finishes on the snapshot it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from index import snapshot
from ingest.errors import LinklensError, NotBuiltError, SnapshotMismatchError
from ingest.settings import Settings

if TYPE_CHECKING:
    from index.search import Searcher

logger = logging.getLogger(__name__)

SearcherOpener = Callable[[Settings], "Searcher"]
# Opens one given snapshot folder: the fallback when the one CURRENT names cannot be loaded.
SnapshotOpener = Callable[[Settings, Path], "Searcher"]
# Told which searcher is served after every change (None: none); metrics listen.
ServingListener = Callable[["Searcher | None"], None]
# Told the id of each snapshot that failed to load (once per snapshot); metrics listen.
RefusalListener = Callable[[str], None]


def _ignore(searcher: Searcher | None) -> None:
    pass


def _ignore_refusal(snapshot_id: str) -> None:
    pass


def open_searcher(settings: Settings) -> Searcher:
    """The real opener. Imported late so importing `serve` does not load the model stack."""
    from index.search import Searcher

    return Searcher.open(settings)


def open_snapshot(settings: Settings, folder: Path) -> Searcher:
    from index.search import Searcher

    return Searcher.open(settings, folder)


class LiveIndex:
    """Holds the current `Searcher` (or the reason there is none) for one app."""

    def __init__(
        self, settings: Settings, opener: SearcherOpener = open_searcher, on_serving: ServingListener = _ignore,
        fallback: SnapshotOpener = open_snapshot, on_refused: RefusalListener = _ignore_refusal,
    ) -> None:
        self._settings = settings
        self._opener = opener
        self._fallback = fallback
        self._on_serving = on_serving
        self._on_refused = on_refused
        self._searcher: Searcher | None = None
        self._unavailable: LinklensError = not_built_error(settings)
        self._reload_problem: str | None = None
        self._refused: set[str] = set()  # snapshots that failed to load: immutable, so never tried again

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

        A snapshot that fails to load (whatever it raises: a damaged manifest, a truncated
        vector file) is skipped with one log line and the `on_refused` report, once: the
        server stays on the snapshot it serves or, at start, falls back to the newest older
        snapshot that loads, so a damaged build never crashes a worker (nor crash-loops N).
        """
        if self._searcher is None:
            return self._open()
        current = snapshot.current_id(self._settings.snapshots_dir)
        if current is not None and current in self._refused:
            return False
        try:
            changed = bool(self._searcher.reload_if_changed())
        except Exception as exc:
            if current is not None and not isinstance(exc, NotBuiltError):
                self._refuse(current, exc, f"staying on snapshot {self.snapshot_id}")
            elif str(exc) != self._reload_problem:  # once per problem, not once per poll
                logger.warning("staying on snapshot %s: %s", self.snapshot_id, exc)
            self._reload_problem = str(exc)
            return False
        self._reload_problem = None
        if changed:
            logger.info("reloaded: now serving snapshot %s", self.snapshot_id)
            self._on_serving(self._searcher)
        return changed

    def _open(self) -> bool:
        """The first load: the snapshot CURRENT names, else the newest older one that loads."""
        current = snapshot.current_id(self._settings.snapshots_dir)
        try:
            if current is not None and current in self._refused:
                self._searcher = self._older_than(current)  # a new older one may have appeared meanwhile
                if self._searcher is None:
                    return False
            else:
                self._searcher = self._opener(self._settings)
        except NotBuiltError as exc:
            self._unavailable = exc
            return False
        except Exception as exc:
            if current is None:
                if str(exc) != str(self._unavailable):
                    logger.warning("index not usable: %s", exc)
                self._unavailable = exc if isinstance(exc, LinklensError) else damaged("CURRENT", exc)
                return False
            self._refuse(current, exc, "looking for an older snapshot that loads")
            self._unavailable = exc if isinstance(exc, LinklensError) else damaged(current, exc)
            self._searcher = self._older_than(current)
            if self._searcher is None:
                return False
        logger.info("serving snapshot %s", self.snapshot_id)
        self._on_serving(self._searcher)
        return True

    def _older_than(self, current: str) -> Searcher | None:
        """The newest snapshot older than `current` that loads, if any (the last good one)."""
        for older in reversed(snapshot.list_ids(self._settings.snapshots_dir)):
            if older >= current or older in self._refused:
                continue
            try:
                return self._fallback(self._settings, self._settings.snapshots_dir / older)
            except Exception as exc:
                self._refuse(older, exc, "trying the one before it")
        return None

    def _refuse(self, snapshot_id: str, exc: BaseException, then: str) -> None:
        self._refused.add(snapshot_id)
        logger.error("snapshot %s cannot be loaded and is skipped (%s); %s — rebuild it: linklens index",
                     snapshot_id, describe(exc), then)
        logger.debug("why snapshot %s could not be loaded", snapshot_id, exc_info=exc)
        self._on_refused(snapshot_id)

    def close(self) -> None:
        """Release the searcher's files at shutdown."""
        searcher, self._searcher = self._searcher, None
        if searcher is not None:
            self._on_serving(None)
            searcher.close()

    @contextlib.asynccontextmanager
    async def kept_current(self, interval_s: float) -> AsyncIterator[None]:
        """Open the newest snapshot, then keep to the newest one every `interval_s` while the block runs.

        The one reload loop of every server: the HTTP app's lifespan and `linklens mcp` over stdio.
        """
        await anyio.to_thread.run_sync(self.refresh)
        poller = asyncio.create_task(self.poll(interval_s), name="linklens-index-poller")
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def poll(self, interval_s: float) -> None:
        """Refresh every `interval_s` until cancelled (`kept_current` owns the task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except Exception:
                # A bug in a reload must not silently stop all future reloads; log it loudly, keep polling.
                logger.exception("index reload failed; will retry in %.1f s", interval_s)


def describe(exc: BaseException) -> str:
    """An exception in one line: our errors by their sentence, others by their type and first line."""
    if isinstance(exc, LinklensError):
        return str(exc)
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def damaged(snapshot_id: str, exc: BaseException) -> SnapshotMismatchError:
    return SnapshotMismatchError(f"snapshot {snapshot_id} cannot be loaded ({describe(exc)}) — rebuild it: "
                                 "linklens index")


def not_built_error(settings: Settings) -> NotBuiltError:
    return NotBuiltError(f"no index in {settings.data_dir} yet — run: linklens build")
