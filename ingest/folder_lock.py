"""One writer per data folder: the crawl lock and the build lock are both a `FolderLock`.

A lock is an exclusive `flock` on a file in the data folder, held for the whole command. The
kernel releases it when the holder exits or dies (SIGKILL, OOM), so a killed command never
leaves a stale lock; the file only keeps the last holder's words (its pid and since when),
which the next holder overwrites, and which a refused command quotes.

Refusing rather than waiting (the default): a second crawl or build on the same folder would
only repeat the running one's work on the same cores and hosts; the message names the holder,
and running the command again afterwards is explicit. `wait=True` is for a short step that must
not run beside the holder (a finishing crawl exporting the articles a build reads).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ingest.errors import CrawlLockedError, LinklensError, StoreError

logger = logging.getLogger(__name__)

CRAWL_LOCK_FILE = ".crawl.lock"
HOLDER_BYTES = 200


def holder_words() -> str:
    """How a holder describes itself in the lock file: `pid 123, since 2026-12-07 02:53:01 UTC`."""
    return f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"


@contextmanager
def folder_lock(path: Path, refused: Callable[[str], LinklensError], wait: bool = False) -> Iterator[None]:
    """Hold the lock file `path`; `refused(holder)` is raised at once when another process holds it.

    With `wait`, block until the holder is done instead (logging who it is).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot use the data folder {path.parent} ({exc}) — make it writable or set "
                         "LINKLENS_DATA_DIR") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, HOLDER_BYTES, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise refused(holder) from None
            logger.warning("waiting for %s (%s) to finish", path.name, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_words().encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def crawl_lock(data_dir: Path) -> AbstractContextManager[None]:
    """Hold the data folder's crawl lock (crawl, build's crawl, --reextract): CrawlLockedError at once if held."""
    return folder_lock(data_dir / CRAWL_LOCK_FILE, lambda holder: CrawlLockedError(
        f"another crawl ({holder}) is writing to the page store in {data_dir} — wait for it to finish, "
        "then run the command again"))
