"""Embeddings already computed, keyed by (model id, passage id), in one SQLite file.

Why: embedding is the slow step of a build. Passage ids are content hashes, so a
rebuild after a recrawl finds every unchanged passage here and embeds only the
new or changed ones. The cache is an optimisation only: deleting it is always safe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ingest.errors import StoreError
from ingest.sqlite import open_wal

# Well under SQLite's bound-parameter limit.
LOOKUP_CHUNK = 900

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    passage_id TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, passage_id)
) WITHOUT ROWID
"""


class EmbeddingCache:
    """Open with `EmbeddingCache.open(path)`; use as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> EmbeddingCache:
        try:
            conn = open_wal(path)
            conn.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot use the embedding cache {path} ({exc}) — delete it (it is rebuilt) or set LINKLENS_DATA_DIR"
            ) from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_many(self, model: str, passage_ids: Sequence[str], dimension: int | None = None) -> dict[str, np.ndarray]:
        """Cached vectors for those ids that have one (of `dimension`, when given)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(passage_ids))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT passage_id, dimension, vector FROM embeddings WHERE model=? AND passage_id IN ({marks})",
                (model, *chunk),
            )
            for passage_id, dim, blob in rows:
                if dimension is None or dim == dimension:
                    found[passage_id] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model, pid, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for pid, v in items]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings(model, passage_id, dimension, vector) VALUES (?,?,?,?)", rows
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def keep_only(self, model: str, passage_ids: Iterable[str]) -> int:
        """Drop this model's vectors for passages no longer in the corpus; returns how many went.

        Keeps the cache the size of the corpus instead of growing with every recrawl.
        Other models' entries are left alone.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep (passage_id TEXT PRIMARY KEY)")
            self._conn.execute("DELETE FROM keep")
            self._conn.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((p,) for p in passage_ids))
            cur = self._conn.execute(
                "DELETE FROM embeddings WHERE model=? AND passage_id NOT IN (SELECT passage_id FROM keep)", (model,)
            )
            self._conn.execute("DELETE FROM keep")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return cur.rowcount

    def count(self, model: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE model=?", (model,)).fetchone()[0])
