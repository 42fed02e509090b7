"""How linklens opens a SQLite file it writes: WAL, autocommit, a busy timeout.

WAL lets readers (the link report, the index builder) run beside the single
writer; `synchronous=NORMAL` is durable at every checkpoint and safe against
corruption, which is the right trade for data a re-crawl can rebuild.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def open_wal(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    """Create the folder if needed and open `path` in WAL mode; raises OSError or sqlite3.Error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
