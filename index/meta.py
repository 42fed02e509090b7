"""The snapshot's `meta.sqlite3`: articles and passages, read back by the searcher.

Passage rows are numbered like the vector and BM25 rows (0..n-1), and an
article's passages are contiguous (title card first), so an article's vectors
are a row range. Beside it, `columns/` holds what the searcher needs for every
article on every query (first row, host, section and list ids, the row → article
map) as memory-mapped .npy arrays, plus `facets.json` (host names, section paths,
list names; section counts; each list's article count, link states and source).
A section is a path of headings (a JSON array), each placement of an article
records which list filed it there (`article_label_list`), so "filed under X by
list A" is one lookup. Older snapshots load: format 3 stored sections as labels
joined with " / " (read back split on it, as that format's filters did) and no
filing list; format 2 has no lists at all. Nothing per article is turned into
Python objects at load time, which keeps loading a million-passage snapshot
within milliseconds; the text of the few results shown is read from SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from index.passages import Passage, article_title
from ingest.models import Article, SectionPath

META_FILE = "meta.sqlite3"
COLUMNS_DIR = "columns"
FACETS_FILE = "facets.json"
# How snapshots before format 4 joined a section and its subsection into one label.
LEGACY_SECTION_SEPARATOR = " / "
# `article_label_list` value of a placement no list of the collection made (an article built without lists).
NO_LIST = -1

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
    passage_count INTEGER NOT NULL,
    lists TEXT NOT NULL
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
"""


class ListSource(TypedDict, total=False):
    """What the page store knows of a list beyond its articles: where it comes from, when it was crawled."""

    url: str
    crawled_at: str | None


@dataclass(frozen=True)
class ArticleRow:
    """What the searcher keeps in memory per article: enough to filter and to render a result."""

    id: int
    position: int
    url: str
    title: str
    sections: tuple[SectionPath, ...]
    host: str
    state: str
    archived_url: str | None
    first_row: int
    passage_count: int


class MetaWriter:
    """Writes `meta.sqlite3` and the article columns batch by batch, holding only small per-article numbers.

    Batches must come in list order, each article's passages contiguous and in
    order (title card first), so that passage rows number 0..n-1 across batches.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._conn = sqlite3.connect(folder / META_FILE)
        # The snapshot folder is fsynced as a whole before it is published; a
        # crash before that leaves a temporary folder nobody reads.
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.executescript(SCHEMA)
        self._rows = 0
        self._ids: list[int] = []
        self._first_rows: list[int] = []
        self._counts: list[int] = []
        self._hosts: dict[str, int] = {}
        self._host_of: list[int] = []
        self._labels: dict[SectionPath, int] = {}
        self._label_ptr: list[int] = [0]
        self._label_ids: list[int] = []
        self._label_lists: list[int] = []
        self._members: dict[SectionPath, int] = {}
        self._children: dict[SectionPath, list[SectionPath]] = {(): []}
        self._lists: dict[str, int] = {}
        self._list_ptr: list[int] = [0]
        self._list_ids: list[int] = []
        self._list_states: dict[str, dict[str, int]] = {}
        self.documents = 0

    def add(self, articles: Sequence[Article], passages: Sequence[Passage]) -> None:
        counts: dict[int, int] = {}
        for p in passages:
            counts[p.link_id] = counts.get(p.link_id, 0) + 1
        rows = []
        first_row = self._rows
        for article in articles:
            count = counts.get(article.link_id, 0)
            rows.append(_article_row(article, len(self._ids), first_row, count))
            self._add_columns(article, first_row, count)
            first_row += count
        if rows:
            self._conn.executemany(f"INSERT INTO articles VALUES ({','.join('?' * len(rows[0]))})", rows)
        self._conn.executemany(
            "INSERT INTO passages VALUES (?,?,?,?,?,?,?)",
            ((self._rows + i, p.id, p.link_id, p.ordinal, p.kind, p.context, p.text) for i, p in enumerate(passages)),
        )
        if first_row != self._rows + len(passages):
            raise ValueError("passages of a batch must belong to its articles, grouped in article order")
        self._rows = first_row

    def _add_columns(self, article: Article, first_row: int, count: int) -> None:
        self._ids.append(article.link_id)
        self._first_rows.append(first_row)
        self._counts.append(count)
        self._host_of.append(self._hosts.setdefault(article.host, len(self._hosts)))
        for name in dict.fromkeys(article.lists):
            self._list_ids.append(self._lists.setdefault(name, len(self._lists)))
            states = self._list_states.setdefault(name, {})
            states[article.state.value] = states.get(article.state.value, 0) + 1
        self._list_ptr.append(len(self._list_ids))
        for filing in dict.fromkeys(article.filings):
            self._label_ids.append(self._labels.setdefault(filing.section, len(self._labels)))
            self._label_lists.append(self._lists.get(filing.list_name, NO_LIST))
        self._label_ptr.append(len(self._label_ids))
        held = dict.fromkeys(path[:depth] for path in article.sections for depth in range(1, len(path) + 1))
        for path in held:
            self._members[path] = self._members.get(path, 0) + 1
            children = self._children.setdefault(path[:-1], [])
            if path not in children:
                children.append(path)
        if article.document is not None and article.document.text.strip():
            self.documents += 1

    def finish(self, list_sources: Mapping[str, ListSource] | None = None) -> tuple[int, int]:
        """Index and close the database, write the columns; returns (articles, passages).

        `list_sources` (by list name) adds each list's URL and last crawl to its facet.
        """
        self._conn.execute("CREATE INDEX passages_article ON passages(article_id, ordinal)")
        self._conn.commit()
        self._conn.close()
        columns = self.folder / COLUMNS_DIR
        columns.mkdir()
        np.save(columns / "article_ids.npy", np.asarray(self._ids, dtype=np.int64))
        np.save(columns / "article_first_row.npy", np.asarray(self._first_rows, dtype=np.int64))
        np.save(columns / "article_passages.npy", np.asarray(self._counts, dtype=np.int32))
        np.save(columns / "article_host.npy", np.asarray(self._host_of, dtype=np.int32))
        np.save(columns / "article_label_ptr.npy", np.asarray(self._label_ptr, dtype=np.int64))
        np.save(columns / "article_label_ids.npy", np.asarray(self._label_ids, dtype=np.int32))
        np.save(columns / "article_label_list.npy", np.asarray(self._label_lists, dtype=np.int32))
        np.save(columns / "article_list_ptr.npy", np.asarray(self._list_ptr, dtype=np.int64))
        np.save(columns / "article_list_ids.npy", np.asarray(self._list_ids, dtype=np.int32))
        counts = np.asarray(self._counts, dtype=np.int64)
        np.save(columns / "row_article.npy", np.repeat(np.arange(len(counts), dtype=np.int32), counts))
        sections = [[list(path), self._members[path]] for path in self._section_tree(())]
        sources = list_sources or {}
        lists = [
            {"name": name, "articles": sum(states.values()), "states": dict(sorted(states.items())),
             "url": sources.get(name, {}).get("url"), "crawled_at": sources.get(name, {}).get("crawled_at")}
            for name, states in self._list_states.items()
        ]
        labels = [list(path) for path in self._labels]
        facets = {"hosts": list(self._hosts), "labels": labels, "sections": sections, "lists": lists}
        (columns / FACETS_FILE).write_text(json.dumps(facets, ensure_ascii=False), encoding="utf-8")
        return len(self._ids), self._rows

    def _section_tree(self, parent: SectionPath) -> list[SectionPath]:
        """Every section path below `parent`, each followed by its own subsections, in list order."""
        return [path for child in self._children.get(parent, []) for path in (child, *self._section_tree(child))]

    def abort(self) -> None:
        self._conn.close()


class ArticleColumns:
    """Per-article and per-passage numbers the searcher filters and groups by, memory-mapped."""

    def __init__(self, folder: Path) -> None:
        columns = folder / COLUMNS_DIR

        def load(name: str) -> np.ndarray:
            # A plain ndarray over the mapping: np.memmap's Python-level indexing costs ~8 µs a lookup.
            return np.asarray(np.load(columns / f"{name}.npy", mmap_mode="r"))

        self.ids = load("article_ids")
        self.first_row = load("article_first_row")
        self.passages = load("article_passages")
        self.host = load("article_host")
        self.label_ptr = load("article_label_ptr")
        self.label_ids = load("article_label_ids")
        # Which list filed each placement; absent before format 4, where "filed under X by list A" cannot be told.
        self.filed_by_list = (columns / "article_label_list.npy").exists()
        self.label_lists = load("article_label_list") if self.filed_by_list else None
        self.row_article = load("row_article")
        if (columns / "article_list_ptr.npy").exists():
            self.list_ptr = load("article_list_ptr")
            self.list_ids = load("article_list_ids")
        else:  # format 2, from before lists: no article is in a list
            self.list_ptr = np.zeros(len(self.ids) + 1, dtype=np.int64)
            self.list_ids = np.zeros(0, dtype=np.int32)
        facets = json.loads((columns / FACETS_FILE).read_text(encoding="utf-8"))
        self.hosts: list[str] = facets["hosts"]
        self.labels: list[SectionPath] = [section_path(label) for label in facets["labels"]]
        self.sections: list[tuple[SectionPath, int]] = [
            (section_path(label), int(count)) for label, count in facets["sections"]
        ]
        self.lists: list[dict[str, Any]] = facets.get("lists", [])
        self.list_names: list[str] = [str(entry["name"]) for entry in self.lists]

    def __len__(self) -> int:
        return len(self.ids)

    def with_hosts(self, host_ids: np.ndarray) -> np.ndarray:
        """Mask of the articles whose host is one of `host_ids`."""
        return np.isin(self.host, host_ids)

    def with_labels(self, label_ids: np.ndarray, list_id: int | None = None) -> np.ndarray:
        """Mask of the articles placed under at least one of `label_ids` (by the list `list_id`, if given).

        ValueError for `list_id` on a snapshot that did not record which list filed each placement."""
        if list_id is None:
            return _articles_holding(self.label_ptr, self.label_ids, label_ids)
        if self.label_lists is None:
            raise ValueError("this snapshot does not record which list filed each placement")
        articles = len(self.label_ptr) - 1
        owners = np.repeat(np.arange(articles), np.diff(self.label_ptr))
        hit = np.isin(self.label_ids, label_ids) & (self.label_lists == list_id)
        return np.bincount(owners[hit], minlength=articles) > 0

    def with_lists(self, list_ids: np.ndarray) -> np.ndarray:
        """Mask of the articles cited by at least one of `list_ids`."""
        return _articles_holding(self.list_ptr, self.list_ids, list_ids)

    def lists_of(self, index: int) -> tuple[str, ...]:
        """Names of the lists citing the article at `index` (its position in the list order)."""
        start, end = int(self.list_ptr[index]), int(self.list_ptr[index + 1])
        return tuple(self.list_names[int(i)] for i in self.list_ids[start:end])


def _article_row(a: Article, position: int, first_row: int, passage_count: int) -> tuple[object, ...]:
    """One `articles` row, columns in SCHEMA order."""
    doc = a.document
    doc_fields = (
        (doc.title, doc.kind, doc.author, doc.date, doc.sitename, doc.language, doc.description, int(doc.thin))
        if doc is not None
        else (None,) * 8
    )
    return (
        a.link_id, position, a.url, article_title(a), json.dumps([list(p) for p in a.sections], ensure_ascii=False),
        a.host, a.state.value,
        a.final_url, a.archived_url, *doc_fields, first_row, passage_count, json.dumps(a.lists),
    )  # fmt: skip


ARTICLE_SELECT = (
    "SELECT id, position, url, title, sections, host, state, archived_url, first_row, passage_count FROM articles"
)


def _article_from_row(r: sqlite3.Row) -> ArticleRow:
    return ArticleRow(
        id=r["id"],
        position=r["position"],
        url=r["url"],
        title=r["title"],
        sections=tuple(section_path(label) for label in json.loads(r["sections"])),
        host=r["host"],
        state=r["state"],
        archived_url=r["archived_url"],
        first_row=r["first_row"],
        passage_count=r["passage_count"],
    )


class MetaReader:
    """Read-only access shared by the searcher's threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn = self._connect()
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self._path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def reopen_after_fork(self) -> None:
        """In a forked child: a connection of its own (SQLite connections must not cross a fork).

        The parent's copy is dropped, not closed: closing it here could touch state
        the parent still owns (SQLite's "do not carry a connection across fork()").
        """
        self._conn = self._connect()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def articles(self) -> list[ArticleRow]:
        """Every article, in list order (for tools; the searcher reads only the ones it shows)."""
        with self._lock:
            rows = self._conn.execute(f"{ARTICLE_SELECT} ORDER BY position").fetchall()
        return [_article_from_row(r) for r in rows]

    def articles_by_id(self, ids: Sequence[int]) -> dict[int, ArticleRow]:
        """The rows of the given article ids (those that exist)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(f"{ARTICLE_SELECT} WHERE id IN ({marks})", list(ids)).fetchall()
        return {r["id"]: _article_from_row(r) for r in rows}

    def urls(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT url FROM articles ORDER BY position")]

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
        out["sections"] = [list(section_path(label)) for label in json.loads(row["sections"])]
        out["lists"] = json.loads(row["lists"]) if "lists" in row.keys() else []  # noqa: SIM118 - sqlite3.Row
        out["thin"] = None if row["thin"] is None else bool(row["thin"])
        out["passages"] = [{"ordinal": p["ordinal"], "kind": p["kind"], "text": p["text"]} for p in passages]
        return out


def section_path(stored: str | list[str]) -> SectionPath:
    """A section as a snapshot stored it: a path (format 4 on), or a label joined with " / " (before)."""
    if isinstance(stored, str):
        return tuple(stored.split(LEGACY_SECTION_SEPARATOR))
    return tuple(stored)


def _articles_holding(ptr: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Mask of the articles whose ragged column (`values[ptr[i]:ptr[i+1]]`) holds at least one of `wanted`."""
    articles = len(ptr) - 1
    owners = np.repeat(np.arange(articles), np.diff(ptr))
    return np.bincount(owners[np.isin(values, wanted)], minlength=articles) > 0
