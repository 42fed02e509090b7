"""The page store's schema, as the ordered migrations that build and upgrade it.

Why migrations and not one CREATE script: a data folder outlives releases. `PRAGMA user_version`
says how many entries a store has run; opening it runs the rest, each in its own transaction, so
a store from any earlier release upgrades in place and a kill mid-upgrade loses nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

# Each entry upgrades the schema by one version; never edit a shipped entry, append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE links (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        reason TEXT,
        final_url TEXT,
        http_status INTEGER,
        archived_url TEXT,
        archived_timestamp TEXT,
        etag TEXT,
        last_modified TEXT,
        crawled_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX links_state ON links(state);
    CREATE TABLE placements (
        link_id INTEGER NOT NULL REFERENCES links(id) ON DELETE CASCADE,
        section TEXT NOT NULL,
        subsection TEXT,
        title TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (link_id, position)
    );
    CREATE TABLE fetches (
        id INTEGER PRIMARY KEY,
        link_id INTEGER NOT NULL REFERENCES links(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        elapsed_ms REAL NOT NULL,
        status INTEGER,
        error TEXT,
        from_archive INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX fetches_link ON fetches(link_id);
    CREATE TABLE bodies (
        link_id INTEGER PRIMARY KEY REFERENCES links(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        content_type TEXT NOT NULL,
        encoding TEXT,
        truncated INTEGER NOT NULL,
        size INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE documents (
        link_id INTEGER PRIMARY KEY REFERENCES links(id) ON DELETE CASCADE,
        title TEXT,
        text TEXT NOT NULL,
        kind TEXT NOT NULL,
        author TEXT,
        date TEXT,
        sitename TEXT,
        language TEXT,
        description TEXT,
        thin INTEGER NOT NULL,
        extracted_at REAL NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the lists a link is cited by (so a link dropped from every list becomes `removed`), and when and
    # where a stored body was fetched (so a refresh that fails can say how old the kept text is, and an
    # archived copy's validators are never sent to the live site). Placements made before lists were
    # recorded go to a list with an empty source, which the first list synced afterwards adopts.
    """
    CREATE TABLE lists (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL UNIQUE,
        added_at REAL NOT NULL,
        synced_at REAL,
        crawled_at REAL
    );
    INSERT INTO lists(id, name, source, added_at)
        SELECT 1, 'links crawled before lists were recorded', '', strftime('%s', 'now')
        WHERE EXISTS (SELECT 1 FROM placements);
    CREATE TABLE list_placements (
        link_id INTEGER NOT NULL REFERENCES links(id) ON DELETE CASCADE,
        list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        section TEXT NOT NULL,
        subsection TEXT,
        title TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (link_id, list_id, position)
    );
    INSERT INTO list_placements(link_id, list_id, section, subsection, title, position)
        SELECT link_id, 1, section, subsection, title, position FROM placements;
    DROP TABLE placements;
    ALTER TABLE list_placements RENAME TO placements;
    CREATE INDEX placements_list ON placements(list_id);
    ALTER TABLE bodies ADD COLUMN fetched_at REAL;
    ALTER TABLE bodies ADD COLUMN from_archive INTEGER NOT NULL DEFAULT 0;
    UPDATE bodies SET fetched_at = (SELECT crawled_at FROM links WHERE links.id = bodies.link_id);
    UPDATE bodies SET from_archive = 1 WHERE link_id IN (SELECT id FROM links WHERE state = 'archived');
    UPDATE links SET etag = NULL, last_modified = NULL WHERE state = 'archived';
    """,
    # 3: collections. A crawl or build that names lists makes them the store's collection; a list it
    # leaves out is dropped (its placements deleted, the row kept with the time, so reports can say so).
    # The command's list arguments are kept in `meta` so that a bare `linklens crawl` re-reads them.
    """
    ALTER TABLE lists ADD COLUMN dropped_at REAL;
    """,
    # 4: links in flight: how many fetches of a link began without its outcome being recorded since. A link
    # whose fetch kills the crawler (SIGKILL, out of memory) is counted at each death, and after two it
    # ends `failed` instead of being fetched (and killing the crawl) forever: see `fail_died_twice`.
    """
    ALTER TABLE links ADD COLUMN fetch_starts INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: a placement's section is a path of headings (JSON array, top first), not two columns that
    # readers joined with " / ": a heading may itself hold " / " ("CI / CD"). Existing rows convert exactly.
    """
    ALTER TABLE placements ADD COLUMN section_path TEXT NOT NULL DEFAULT '[]';
    UPDATE placements SET section_path =
        CASE WHEN subsection IS NULL THEN json_array(section) ELSE json_array(section, subsection) END;
    ALTER TABLE placements DROP COLUMN subsection;
    ALTER TABLE placements DROP COLUMN section;
    """,
]


def upgrade(conn: sqlite3.Connection, transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
    """Run the migrations `conn`'s store has not run yet, one transaction each (raises sqlite3.Error)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        with transaction() as tx:
            for statement in script.split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version={number}")
