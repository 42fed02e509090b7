"""The snapshot's `meta.sqlite3`: articles and passages, read back by the searcher.

Passage rows are numbered like the FAISS and BM25 rows (0..n-1), and an
article's passages are contiguous (title card first), so an article's vectors
are a row range. Only articles are held in memory by the searcher; passage
texts are read from here for the few results shown.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from index.passages import Passage, article_title
from ingest.models import Article

META_FILE = "meta.sqlite3"

SCHEMA = """
CREATE TABLE articles (
    id INTEGER PRIMARY KEY,
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    sections TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    final_url TEXT,
    archived_url TEXT,
    doc_title TEXT,
    doc_kind TEXT,
    author TEXT,
    date TEXT,
    sitename TEXT,
    language TEXT,
    description TEXT,
    thin INTEGER,
    first_row INTEGER NOT NULL,
    passage_count INTEGER NOT NULL
);
CREATE TABLE passages (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    article_id INTEGER NOT NULL REFERENCES articles(id),
    ordinal INTEGER NOT NULL,
    kind TEXT NOT NULL,
    context TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX passages_article ON passages(article_id, ordinal);
"""


@dataclass(frozen=True)
class ArticleRow:
    """What the searcher keeps in memory per article: enough to filter and to render a result."""

    id: int
    position: int
    url: str
    title: str
    sections: tuple[str, ...]
    host: str
    state: str
    archived_url: str | None
    first_row: int
    passage_count: int


def write(path: Path, articles: Sequence[Article], passages: Sequence[Passage]) -> None:
    """Write both tables; `passages` must be grouped by article in `articles` order."""
    counts: dict[int, int] = {}
    for p in passages:
        counts[p.link_id] = counts.get(p.link_id, 0) + 1
    rows = []
    first_row = 0
    for position, article in enumerate(articles):
        count = counts.get(article.link_id, 0)
        rows.append(_article_row(article, position, first_row, count))
        first_row += count
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        if rows:
            conn.executemany(f"INSERT INTO articles VALUES ({','.join('?' * len(rows[0]))})", rows)
        conn.executemany(
            "INSERT INTO passages VALUES (?,?,?,?,?,?,?)",
            ((row, p.id, p.link_id, p.ordinal, p.kind, p.context, p.text) for row, p in enumerate(passages)),
        )
        conn.commit()
    finally:
        conn.close()


def _article_row(a: Article, position: int, first_row: int, passage_count: int) -> tuple[object, ...]:
    """One `articles` row, columns in SCHEMA order."""
    doc = a.document
    doc_fields = (
        (doc.title, doc.kind, doc.author, doc.date, doc.sitename, doc.language, doc.description, int(doc.thin))
        if doc is not None
        else (None,) * 8
    )
    return (
        a.link_id, position, a.url, article_title(a), json.dumps(a.sections), a.host, a.state.value,
        a.final_url, a.archived_url, *doc_fields, first_row, passage_count,
    )  # fmt: skip


class MetaReader:
    """Read-only access shared by the searcher's threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def articles(self) -> list[ArticleRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, position, url, title, sections, host, state, archived_url, first_row, passage_count "
                "FROM articles ORDER BY position"
            ).fetchall()
        return [
            ArticleRow(
                id=r["id"],
                position=r["position"],
                url=r["url"],
                title=r["title"],
                sections=tuple(json.loads(r["sections"])),
                host=r["host"],
                state=r["state"],
                archived_url=r["archived_url"],
                first_row=r["first_row"],
                passage_count=r["passage_count"],
            )
            for r in rows
        ]

    def passage_texts(self, rows: Sequence[int]) -> dict[int, str]:
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        with self._lock:
            found = self._conn.execute(f"SELECT row, text FROM passages WHERE row IN ({marks})", list(rows)).fetchall()
        return {r[0]: r[1] for r in found}

    def article(self, article_id: int) -> dict[str, object] | None:
        """Everything stored about one article, with its passages in order."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM articles WHERE id=?", (article_id,)).fetchone()
            if row is None:
                return None
            passages = self._conn.execute(
                "SELECT ordinal, kind, text FROM passages WHERE article_id=? ORDER BY ordinal", (article_id,)
            ).fetchall()
        out = {k: row[k] for k in row.keys() if k not in ("first_row", "passage_count", "position")}  # noqa: SIM118
        out["sections"] = json.loads(row["sections"])
        out["thin"] = None if row["thin"] is None else bool(row["thin"])
        out["passages"] = [{"ordinal": p["ordinal"], "kind": p["kind"], "text": p["text"]} for p in passages]
        return out
