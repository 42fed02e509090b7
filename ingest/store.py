"""The page store: one SQLite file (WAL) holding links, fetch attempts, raw bodies and documents.

Why one file and one writer: a crawl killed at any moment must resume without
losing or duplicating work. Each link's whole outcome (attempts, body, document,
state) is written in one transaction, so a link is either finished or pending,
never half-done. Readers (the index builder, the link report) never block the
writer thanks to WAL.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import StoreError, UnknownListError
from ingest.extract_job import compress_body
from ingest.models import (
    Article,
    CrawlOutcome,
    Document,
    FetchedBody,
    Filing,
    LinkState,
    ListedLink,
    SectionPath,
)
from ingest.sqlite import open_wal
from ingest.store_schema import upgrade
from ingest.urls import host_of

# `meta` key holding the collection's JSON spec (`ingest.collection.CollectionSpec`).
COLLECTION_META_KEY = "collection"
# The list that `add_links` files links under when the caller names none (tests, benchmarks).
UNNAMED_LIST_SOURCE = "(unnamed list)"
LEGACY_LIST_SOURCE = ""
# A link whose fetch began this many times without an outcome killed the crawler each time: never again.
DEATHS_BEFORE_FAILED = 2
DIED_TWICE_REASON = ("the crawler died while fetching it, twice (killed, or out of memory) — "
                     "linklens crawl --retry-failed tries it again")


@dataclass
class ListSync:
    """What syncing one list changed in the store."""

    list_id: int
    added: int  # links the store did not know
    removed: int  # links this list dropped that no other list cites: now `removed`
    returned: int  # `removed` links cited again: pending once more


@dataclass
class CollectionSync:
    """What making the store hold exactly one collection of lists changed."""

    lists: list[ListSync]
    dropped: list[str]  # names of the lists the collection no longer holds
    removed: int  # links of dropped lists that no list of the collection cites: now `removed`


class CollectionWriter:
    """Syncs a collection's lists one at a time inside one transaction (`Store.syncing_collection`)."""

    def __init__(self, store: Store, conn: sqlite3.Connection, now: float) -> None:
        self._store = store
        self._conn = conn
        self._now = now
        self._claimed: set[int] = set()  # links of the lists added so far: the collection's links
        self._offset = 0
        self._kept: set[str] = set()
        self.synced: list[ListSync] = []
        self._dropped: list[str] = []
        self._removed = 0

    @property
    def links_held(self) -> int:
        """Distinct links of the lists added so far."""
        return len(self._claimed)

    def new_links(self, links: Iterable[ListedLink]) -> int:
        """How many of `links` the lists added so far do not hold (what adding them would add)."""
        count = 0
        for link in links:
            row = self._conn.execute("SELECT id FROM links WHERE url=?", (link.url,)).fetchone()
            count += row is None or row[0] not in self._claimed
        return count

    def add(self, source: str, name: str, links: list[ListedLink]) -> ListSync:
        """Sync one list, after the lists added before it."""
        synced = self._store._sync_one(self._conn, source, name, links, self._now, self._offset, self._claimed)
        self._offset += max((p.position for link in links for p in link.placements), default=0) + 1
        self._kept.add(source)
        self.synced.append(synced)
        return synced

    def keep(self, source: str) -> None:
        """A list of the collection not read this time: it is not dropped, its links stay as they were."""
        self._kept.add(source)

    def rename(self, list_id: int, name: str) -> None:
        self._conn.execute("UPDATE lists SET name=? WHERE id=?", (name, list_id))

    def drop_the_rest(self, spec: str | None) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(self._now))
        for row in self._conn.execute("SELECT id, name, source FROM lists WHERE dropped_at IS NULL ORDER BY id")\
                .fetchall():
            if row["source"] in self._kept:
                continue
            self._dropped.append(row["name"])
            self._removed += self._store._drop_list(self._conn, row["id"],
                                                    f"its list {row['name']} was dropped on {day}", self._now)
        if spec is not None:
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (COLLECTION_META_KEY, spec))

    def result(self) -> CollectionSync:
        return CollectionSync(self.synced, self._dropped, self._removed)


class Store:
    """The page store. Open with `Store.open(path)`; one instance per process is the writer."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        try:
            conn = open_wal(path, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot use the data folder {path.parent} ({exc}) — make it writable or set LINKLENS_DATA_DIR"
            ) from None
        store = cls(conn, path)
        store._migrate()
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE so a second writer waits instead of failing half-way."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        try:
            upgrade(self._conn, self.transaction)
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot prepare the page store {self.path} ({exc}) — check the data folder or set LINKLENS_DATA_DIR"
            ) from None

    # -- links -------------------------------------------------------------

    def add_links(self, links: list[ListedLink], source: str = UNNAMED_LIST_SOURCE, name: str | None = None) -> int:
        """Add `links` to the list `source`, keeping every link it already holds. Returns how many were new.

        Unlike `sync_list` (the list is the truth: what it no longer holds is dropped), this only
        adds, so a list can be written in batches: `bench/synthetic.py` fills a million-passage
        store 2,000 links at a time, and a sync per batch would remove every batch before it.
        """
        now = time.time()
        with self.transaction() as conn:
            return self._sync_one(conn, source, name or source, links, now, offset=0, claimed=set(),
                                  keep_held=True).added

    def sync_list(self, source: str, name: str, links: list[ListedLink]) -> ListSync:
        """Make the store hold exactly `links` for the list `source`, in one transaction.

        Idempotent: syncing the same list twice changes nothing, so `crawl` always starts by
        re-reading its list. A link the list no longer holds loses this list's placements; once no
        list cites it, it becomes `removed` (kept, with its history, but left out of the index).
        Another list's links are never touched. A `removed` link cited again is pending once more.
        """
        now = time.time()
        with self.transaction() as conn:
            return self._sync_one(conn, source, name, links, now, offset=0, claimed=set())

    def sync_collection(self, lists: Sequence[tuple[str, str, list[ListedLink]]], keep: Iterable[str] = (),
                        spec: str | None = None) -> CollectionSync:
        """Make the store's collection exactly `lists` ((source, name, links) each), in one transaction.

        Each list is synced as by `sync_list`. Lists the store holds that are neither in `lists` nor
        in `keep` (sources that could not be read this time: their links stay as they were) are
        dropped: their placements go, and a link no list of the collection cites becomes `removed`.
        A link cited by several lists takes its title and list order from the first list citing it,
        and lists follow one another in the order given. `spec` (JSON) is kept for a later bare crawl.
        """
        with self.syncing_collection(spec) as writer:
            for source, name, links in lists:
                writer.add(source, name, links)
            for source in keep:
                writer.keep(source)
        return writer.result()

    @contextmanager
    def syncing_collection(self, spec: str | None = None) -> Iterator[CollectionWriter]:
        """`sync_collection` one list at a time: each list is written as soon as it is read, so only one
        list is held in memory, and the whole collection is still one transaction (an exception
        inside changes nothing). When the block ends, the lists neither added nor kept are dropped."""
        with self.transaction() as conn:
            writer = CollectionWriter(self, conn, time.time())
            yield writer
            writer.drop_the_rest(spec)

    def collection_spec(self) -> str | None:
        """The JSON spec of the lists the last crawl or build named, if any."""
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (COLLECTION_META_KEY,)).fetchone()
        return None if row is None else str(row[0])

    def _sync_one(self, conn: sqlite3.Connection, source: str, name: str, links: list[ListedLink], now: float,
                  offset: int, claimed: set[int], keep_held: bool = False) -> ListSync:
        """Sync one list inside the caller's transaction; `claimed` links keep the title and order they have.

        `keep_held` adds `links` to what the list holds instead of replacing it (nothing is removed).
        """
        added = returned = 0
        list_id = self._list_id(conn, source, name, now)
        before = set() if keep_held else self._take_placements(conn, list_id)
        held: set[int] = set()
        for link in links:
            row = conn.execute("SELECT id, state FROM links WHERE url=?", (link.url,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO links(url, title, position, updated_at) VALUES (?, ?, ?, ?)",
                    (link.url, link.title, offset + link.position, now),
                )
                link_id = int(cur.lastrowid or 0)
                added += 1
            else:
                link_id = row[0]
                if row[1] == LinkState.REMOVED.value:
                    returned += 1
                    conn.execute("UPDATE links SET state=?, reason=?, updated_at=? WHERE id=?",
                                 (LinkState.PENDING.value, f"cited again by {name}", now, link_id))
                if link_id not in claimed:
                    conn.execute("UPDATE links SET title=?, position=? WHERE id=?",
                                 (link.title, offset + link.position, link_id))
            held.add(link_id)
            claimed.add(link_id)
            conn.executemany(
                "INSERT OR REPLACE INTO placements(link_id, list_id, section_path, title, position) VALUES (?,?,?,?,?)",
                [(link_id, list_id, _path_json(p.section), p.title, p.position) for p in link.placements],
            )
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        removed = self._remove_uncited(conn, before - held, f"dropped from {name} on {day}", now)
        conn.execute("UPDATE lists SET synced_at=?, dropped_at=NULL WHERE id=?", (now, list_id))
        return ListSync(list_id, added, removed, returned)

    def _drop_list(self, conn: sqlite3.Connection, list_id: int, why: str, now: float) -> int:
        """Take a list out of the collection; returns how many of its links no other list cites."""
        links = self._take_placements(conn, list_id)
        conn.execute("UPDATE lists SET dropped_at=? WHERE id=?", (now, list_id))
        return self._remove_uncited(conn, links, why, now)

    @staticmethod
    def _take_placements(conn: sqlite3.Connection, list_id: int) -> set[int]:
        """Delete a list's placements; returns the links they placed (to re-place, or to check for citers)."""
        links = {r[0] for r in conn.execute("SELECT DISTINCT link_id FROM placements WHERE list_id=?", (list_id,))}
        conn.execute("DELETE FROM placements WHERE list_id=?", (list_id,))
        return links

    @staticmethod
    def _remove_uncited(conn: sqlite3.Connection, link_ids: set[int], why: str, now: float) -> int:
        removed = 0
        for link_id in sorted(link_ids):
            if conn.execute("SELECT 1 FROM placements WHERE link_id=? LIMIT 1", (link_id,)).fetchone():
                continue  # another list still cites it
            removed += 1
            conn.execute("UPDATE links SET state=?, reason=?, updated_at=? WHERE id=?",
                         (LinkState.REMOVED.value, f"no longer in any list ({why})", now, link_id))
        return removed

    @staticmethod
    def _list_id(conn: sqlite3.Connection, source: str, name: str, now: float) -> int:
        row = conn.execute("SELECT id FROM lists WHERE source=?", (source,)).fetchone()
        if row is not None:
            conn.execute("UPDATE lists SET name=? WHERE id=?", (name, row[0]))
            return int(row[0])
        legacy = conn.execute("SELECT id FROM lists WHERE source=?", (LEGACY_LIST_SOURCE,)).fetchone()
        if legacy is not None:  # placements from before lists were recorded: the first list synced adopts them
            conn.execute("UPDATE lists SET source=?, name=? WHERE id=?", (source, name, legacy[0]))
            return int(legacy[0])
        cur = conn.execute("INSERT INTO lists(name, source, added_at) VALUES (?,?,?)", (name, source, now))
        return int(cur.lastrowid or 0)

    def mark_lists_crawled(self, list_ids: Iterable[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("UPDATE lists SET crawled_at=? WHERE id=?", [(time.time(), i) for i in list_ids])

    def lists(self, include_dropped: bool = True) -> list[dict[str, object]]:
        """Every list the store holds (in the order they were added), with how many links it cites and
        their states; a dropped list has `dropped_at` set and cites nothing."""
        where = "" if include_dropped else " WHERE l.dropped_at IS NULL"
        rows = self._conn.execute(
            "SELECT l.*, (SELECT COUNT(DISTINCT link_id) FROM placements p WHERE p.list_id = l.id) AS links "
            f"FROM lists l{where} ORDER BY l.id").fetchall()
        states: dict[int, dict[str, int]] = {}
        for list_id, state, count in self._conn.execute(
                "SELECT p.list_id, l.state, COUNT(DISTINCT l.id) FROM placements p JOIN links l ON l.id = p.link_id "
                "GROUP BY p.list_id, l.state ORDER BY l.state"):
            states.setdefault(list_id, {})[state] = count
        return [{**dict(r), "states": states.get(r["id"], {})} for r in rows]

    def list_named(self, name: str) -> dict[str, object]:
        """The list called `name` (case-insensitive; a list of the collection before a dropped one).
        StoreError listing the known names when there is none."""
        known = self.lists()
        for candidates in ([r for r in known if r["dropped_at"] is None], known):
            for row in candidates:
                if str(row["name"]).casefold() == name.strip().casefold():
                    return row
        names = ", ".join(repr(r["name"]) for r in known) or "none yet (run: linklens crawl LIST)"
        raise UnknownListError(f"no list called {name!r} in the store — known lists: {names}")

    def link_ids_to_crawl(self, refresh: bool = False, retry_failed: bool = False) -> list[int]:
        """Links to crawl, in list order: pending ones; with `retry_failed` also failed ones; with
        `refresh` every link still cited (conditional re-fetch)."""
        if refresh:
            where, params = "state != ?", [LinkState.REMOVED.value]
        else:
            states = [LinkState.PENDING.value] + ([LinkState.FAILED.value] if retry_failed else [])
            where, params = f"state IN ({','.join('?' * len(states))})", states
        rows = self._conn.execute(f"SELECT id FROM links WHERE {where} ORDER BY position", params).fetchall()
        return [r[0] for r in rows]

    def fetch_started(self, link_id: int) -> None:
        """Committed before a link's fetch begins: if the crawler dies before the outcome, the next run knows."""
        with self.transaction() as conn:
            conn.execute("UPDATE links SET fetch_starts = fetch_starts + 1 WHERE id=?", (link_id,))

    def fetch_set_aside(self, link_id: int) -> None:
        """The fetch ended without an outcome yet (tried again at the end of the crawl): no longer in flight."""
        with self.transaction() as conn:
            conn.execute("UPDATE links SET fetch_starts = 0 WHERE id=?", (link_id,))

    def links_in_doubt(self, link_ids: Iterable[int]) -> set[int]:
        """Of `link_ids`, those that were in flight when a crawler died once: fetched one at a time, so
        the next death can only count the link that caused it."""
        rows = self._conn.execute("SELECT id FROM links WHERE fetch_starts > 0").fetchall()
        return {r[0] for r in rows} & set(link_ids)

    def fail_died_twice(self) -> int:
        """Links whose fetch began DEATHS_BEFORE_FAILED times with no outcome end `failed`; returns how many."""
        now = time.time()
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE links SET state=?, reason=?, fetch_starts=0, crawled_at=?, updated_at=? "
                "WHERE fetch_starts >= ?",
                (LinkState.FAILED.value, DIED_TWICE_REASON, now, now, DEATHS_BEFORE_FAILED)).rowcount

    def link(self, link_id: int) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM links WHERE id=?", (link_id,)).fetchone()
        if row is None:
            raise KeyError(link_id)
        return row

    def reset_for_refresh(self, link_ids: list[int]) -> None:
        """Mark links pending again so a killed refresh (or retry) resumes; stored bodies stay for 304s."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE links SET state=?, updated_at=? WHERE id=?",
                [(LinkState.PENDING.value, time.time(), i) for i in link_ids],
            )

    def record_outcome(self, link_id: int, outcome: CrawlOutcome) -> None:
        """Store one link's whole crawl outcome atomically; this is what makes resume exact."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO fetches(link_id, url, attempt, started_at, elapsed_ms, status, error, from_archive) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [
                    (link_id, a.url, a.attempt, a.started_at, a.elapsed_ms, a.status, a.error, int(a.from_archive))
                    for a in outcome.attempts
                ],
            )
            body = outcome.body
            if body is not None and not outcome.not_modified:
                conn.execute(
                    "INSERT OR REPLACE INTO bodies(link_id, url, content_type, encoding, truncated, size, body, "
                    "fetched_at, from_archive) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        link_id,
                        body.url,
                        body.content_type,
                        body.encoding,
                        int(body.truncated),
                        len(body.body),
                        outcome.compressed_body or compress_body(body.body),
                        now,
                        int(outcome.from_archive),
                    ),
                )
            if outcome.document is not None:
                _write_document(conn, link_id, outcome.document)
            if body is not None and not outcome.not_modified:
                # Validators are stored only with the text they validate (a 304 can only confirm text that
                # exists): a new body replaces them, with none when it yielded no text or is the archive's
                # copy (whose validators describe its copy, not the live page).
                validated = not outcome.from_archive and _has_text(outcome.document)
                conn.execute("UPDATE links SET etag=?, last_modified=? WHERE id=?",
                             (body.etag if validated else None, body.last_modified if validated else None, link_id))
            conn.execute(
                "UPDATE links SET state=?, reason=?, final_url=?, http_status=?, archived_url=?, archived_timestamp=?, "
                "crawled_at=?, updated_at=?, fetch_starts=0 WHERE id=?",
                (
                    outcome.state.value,
                    outcome.reason,
                    outcome.final_url,
                    outcome.http_status,
                    outcome.archived_url,
                    outcome.archived_timestamp,
                    now,
                    now,
                    link_id,
                ),
            )

    def record_failure(self, link_id: int, reason: str) -> None:
        """The last resort when a whole outcome could not be stored: the link is `failed` with the reason."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE links SET state=?, reason=?, crawled_at=?, updated_at=?, fetch_starts=0 WHERE id=?",
                         (LinkState.FAILED.value, reason, now, now, link_id))

    def restore_pending(self, link_id: int, reason: str) -> None:
        """A link that was not really tried (the network was down): pending, so the next crawl takes it up."""
        with self.transaction() as conn:
            conn.execute("UPDATE links SET state=?, reason=?, updated_at=?, fetch_starts=0 WHERE id=?",
                         (LinkState.PENDING.value, reason, time.time(), link_id))

    def kept_text_date(self, link_id: int) -> str | None:
        """When the stored live copy of a link was fetched (YYYY-MM-DD), if it has one with text.

        Only then does a refresh send the link's validators: a 304 must have text to keep.
        """
        row = self._conn.execute(
            "SELECT b.fetched_at FROM bodies b JOIN documents d ON d.link_id = b.link_id "
            "WHERE b.link_id=? AND b.from_archive=0 AND trim(d.text) != ''", (link_id,)).fetchone()
        if row is None:
            return None
        return time.strftime("%Y-%m-%d", time.localtime(row[0])) if row[0] else "an earlier crawl"

    def replace_document(self, link_id: int, doc: Document) -> None:
        """Re-extraction path: new text from a stored body, no fetch."""
        with self.transaction() as conn:
            _write_document(conn, link_id, doc)

    def link_ids_with_bodies(self) -> list[int]:
        return [r[0] for r in self._conn.execute("SELECT link_id FROM bodies ORDER BY link_id")]

    def body(self, link_id: int) -> FetchedBody | None:
        """The stored raw body (decompressed), for re-extraction and conditional re-fetch."""
        row = self._conn.execute("SELECT * FROM bodies WHERE link_id=?", (link_id,)).fetchone()
        if row is None:
            return None
        link = self.link(link_id)
        return FetchedBody(
            url=row["url"],
            content_type=row["content_type"],
            body=zlib.decompress(row["body"]),
            truncated=bool(row["truncated"]),
            encoding=row["encoding"],
            etag=link["etag"],
            last_modified=link["last_modified"],
        )

    def document(self, link_id: int) -> Document | None:
        row = self._conn.execute("SELECT * FROM documents WHERE link_id=?", (link_id,)).fetchone()
        return _document_from_row(row) if row else None

    # -- reports -----------------------------------------------------------

    def state_counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT state, COUNT(*) FROM links GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def link_rows(self, state: LinkState | None = None, list_id: int | None = None) -> list[dict[str, object]]:
        """The link-health report: one dict per link with its lists and sections, in list order.

        With `list_id`, only that list's links, with the sections they have in that list.
        """
        query = "SELECT * FROM links"
        clauses: list[str] = []
        params: list[object] = []
        if state is not None:
            clauses.append("state=?")
            params.append(state.value)
        if list_id is not None:
            clauses.append("id IN (SELECT link_id FROM placements WHERE list_id=?)")
            params.append(list_id)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = self._conn.execute(query + " ORDER BY position", params).fetchall()
        filings = self._filings_by_link(list_id)
        lists = self._lists_by_link()
        attempts = dict(self._conn.execute("SELECT link_id, COUNT(*) FROM fetches GROUP BY link_id").fetchall())
        return [
            {
                "id": r["id"],
                "url": r["url"],
                "title": r["title"],
                "lists": lists.get(r["id"], []),
                "sections": [list(path) for path in dict.fromkeys(f.section for f in filings.get(r["id"], []))],
                "state": r["state"],
                "reason": r["reason"],
                "http_status": r["http_status"],
                "final_url": r["final_url"],
                "archived_url": r["archived_url"],
                "archived_timestamp": r["archived_timestamp"],
                "attempts": attempts.get(r["id"], 0),
            }
            for r in rows
        ]

    def _filings_by_link(self, list_id: int | None = None) -> dict[int, list[Filing]]:
        """Where each link is filed: (list name, section path), each once, lists in the order they were added."""
        out: dict[int, list[Filing]] = {}
        where, params = ("WHERE p.list_id=? ", (list_id,)) if list_id is not None else ("", ())
        for r in self._conn.execute(
                "SELECT p.link_id, l.name, p.section_path FROM placements p JOIN lists l ON l.id = p.list_id "
                f"{where}ORDER BY p.list_id, p.position", params):
            filing = Filing(r["name"], tuple(json.loads(r["section_path"])))
            filed = out.setdefault(r["link_id"], [])
            if filing not in filed:
                filed.append(filing)
        return out

    def _lists_by_link(self) -> dict[int, list[str]]:
        """Names of the lists citing each link, in the order the lists were added."""
        out: dict[int, list[str]] = {}
        for link_id, name in self._conn.execute(
                "SELECT DISTINCT p.link_id, l.name FROM placements p JOIN lists l ON l.id = p.list_id "
                "ORDER BY p.link_id, l.id"):
            out.setdefault(link_id, []).append(name)
        return out

    def list_sources_by_link(self) -> dict[int, list[str]]:
        """The sources (store keys) of the lists citing each link: where a link may lead depends on them."""
        out: dict[int, list[str]] = {}
        for link_id, source in self._conn.execute(
                "SELECT DISTINCT p.link_id, l.source FROM placements p JOIN lists l ON l.id = p.list_id"):
            out.setdefault(link_id, []).append(source)
        return out

    def article_count(self) -> int:
        """How many articles `articles()` yields: links still cited by a list."""
        return int(self._conn.execute("SELECT COUNT(*) FROM links WHERE state != ?",
                                      (LinkState.REMOVED.value,)).fetchone()[0])

    def articles(self) -> Iterator[Article]:
        """Every link still cited by a list, with its list context and document, in list order: the index's input.

        Streamed: documents are read row by row with their link (one query, a
        separate connection so other calls on this store do not disturb it), so
        a corpus of any size passes through in constant memory.
        """
        filings = self._filings_by_link()
        lists = self._lists_by_link()
        reader = open_wal(self.path, check_same_thread=False)
        reader.row_factory = sqlite3.Row
        try:
            rows = reader.execute(
                "SELECT l.id AS link_id, l.url AS link_url, l.title AS list_title, l.state AS link_state, "
                "l.final_url AS link_final_url, l.archived_url AS link_archived_url, d.text AS doc_text, d.* "
                "FROM links l LEFT JOIN documents d ON d.link_id = l.id WHERE l.state != ? ORDER BY l.position",
                (LinkState.REMOVED.value,),
            )
            for r in rows:
                yield Article(
                    link_id=r["link_id"],
                    url=r["link_url"],
                    host=host_of(r["link_final_url"] or r["link_url"]),
                    list_title=r["list_title"],
                    filings=filings.get(r["link_id"], []),
                    state=LinkState(r["link_state"]),
                    final_url=r["link_final_url"],
                    archived_url=r["link_archived_url"],
                    document=None if r["doc_text"] is None else _document_from_row(r),
                    lists=lists.get(r["link_id"], []),
                )
        finally:
            reader.close()


def _path_json(path: SectionPath) -> str:
    return json.dumps(list(path), ensure_ascii=False, separators=(",", ":"))


def _has_text(doc: Document | None) -> bool:
    return doc is not None and bool(doc.text.strip())


def _write_document(conn: sqlite3.Connection, link_id: int, doc: Document) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO documents(link_id, title, text, kind, author, date, sitename, language, "
        "description, thin, extracted_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (link_id, doc.title, doc.text, doc.kind, doc.author, doc.date, doc.sitename, doc.language, doc.description,
         int(doc.thin), time.time()),
    )


def _document_from_row(row: sqlite3.Row) -> Document:
    return Document(
        title=row["title"],
        text=row["text"],
        kind=row["kind"],
        author=row["author"],
        date=row["date"],
        sitename=row["sitename"],
        language=row["language"],
        description=row["description"],
        thin=bool(row["thin"]),
    )
