"""The list is the truth: a link no list cites any more is `removed`, kept out of the index, shown in reports."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from ingest.models import CrawlOutcome, FetchedBody, Filing, LinkState, ListedLink, ListPlacement
from ingest.settings import Settings
from ingest.store import Store
from ingest.store_schema import MIGRATIONS
from tests.fixtureweb import FixtureWeb, normalize_url

runner = CliRunner()


def links(*urls: str, section: str = "Reading") -> list[ListedLink]:
    return [ListedLink(u, [ListPlacement((section,), f"Title of {u}", i)]) for i, u in enumerate(urls)]


def states(store: Store) -> dict[str, str]:
    return {str(r["url"]): str(r["state"]) for r in store.link_rows()}


def test_a_link_dropped_from_its_only_list_is_removed_and_left_out_of_the_index(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite3") as store:
        store.sync_list("a.md", "a", links("http://x/1", "http://x/2", "http://x/3"))
        store.sync_list("b.md", "b", links("http://x/3", "http://x/4"))
        sync = store.sync_list("a.md", "a", links("http://x/1"))
        assert (sync.added, sync.removed) == (0, 1)
        assert states(store) == {"http://x/1": "pending", "http://x/2": "removed", "http://x/3": "pending",
                                 "http://x/4": "pending"}  # x/3 is still cited by list b
        removed = next(r for r in store.link_rows() if r["url"] == "http://x/2")
        assert "no longer in any list" in str(removed["reason"]) and "dropped from a" in str(removed["reason"])
        assert [a.url for a in store.articles()] == ["http://x/1", "http://x/3", "http://x/4"]
        assert store.link_ids_to_crawl(refresh=True) == [r["id"] for r in store.link_rows()
                                                          if r["state"] != "removed"]

        # crawling list b never touches list a's links
        store.sync_list("b.md", "b", links("http://x/4"))
        assert states(store)["http://x/1"] == "pending" and states(store)["http://x/3"] == "removed"

        # a removed link cited again is crawled again
        back = store.sync_list("a.md", "a", links("http://x/1", "http://x/2"))
        assert back.returned == 1 and states(store)["http://x/2"] == "pending"
        lists = {str(row["source"]): row["links"] for row in store.lists()}
        assert lists == {"a.md": 2, "b.md": 1}


def test_a_store_from_before_lists_upgrades_and_its_links_are_adopted_by_the_next_list(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version=1;")
    now = time.time()
    for i, url in enumerate(["http://x/1", "http://x/2"], start=1):
        conn.execute("INSERT INTO links(id, url, title, position, state, etag, updated_at) VALUES (?,?,?,?,?,?,?)",
                     (i, url, f"T{i}", i, "archived" if i == 2 else "ok", f'"e{i}"', now))
        conn.execute("INSERT INTO placements VALUES (?, 'Reading', NULL, ?, ?)", (i, f"T{i}", i))
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert [a.sections for a in store.articles()] == [[("Reading",)], [("Reading",)]]
        assert store.link(2)["etag"] is None  # an archived copy's validator is never sent to the live site
        assert store.link(1)["etag"] == '"e1"'
        sync = store.sync_list("/lists/awesome.md", "awesome", links("http://x/1"))
        assert sync.removed == 1 and states(store) == {"http://x/1": "ok", "http://x/2": "removed"}
        assert [str(r["source"]) for r in store.lists()] == ["/lists/awesome.md"]


def test_a_store_with_joined_sections_upgrades_to_paths_exactly(tmp_path: Path) -> None:
    """Before paths, placements held a section and a subsection column: the heading "CI / CD" converts to one
    heading, not two, and "A" with its subsection "B" to the path A › B."""
    path = tmp_path / "v3.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(";".join(MIGRATIONS[:3]) + ";\nPRAGMA user_version=3;")
    now = time.time()
    conn.execute("INSERT INTO lists(id, name, source, added_at) VALUES (1, 'awesome', '/lists/awesome.md', ?)", (now,))
    rows = [(1, "http://x/1", "CI / CD", None), (2, "http://x/2", "A", "B"),
            (3, "http://x/3", "CI / CD", "Runners / X")]
    for i, url, section, subsection in rows:
        conn.execute("INSERT INTO links(id, url, title, position, updated_at) VALUES (?,?,?,?,?)",
                     (i, url, "T", i, now))
        conn.execute("INSERT INTO placements(link_id, list_id, section, subsection, title, position) "
                     "VALUES (?, 1, ?, ?, 'T', ?)", (i, section, subsection, i))
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert [a.filings for a in store.articles()] == [
            [Filing("awesome", ("CI / CD",))], [Filing("awesome", ("A", "B"))],
            [Filing("awesome", ("CI / CD", "Runners / X"))],
        ]
        assert [r["sections"] for r in store.link_rows()] == [[["CI / CD"]], [["A", "B"]], [["CI / CD", "Runners / X"]]]


def test_crawl_marks_dropped_links_removed_and_links_shows_them(web: FixtureWeb, crawl_settings: Settings,
                                                                list_file: Path) -> None:
    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    text = list_file.read_text()
    dropped = next(u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u
                   and text.count(f"]({u})") == 1)
    list_file.write_text("\n".join(ln for ln in text.splitlines() if f"]({dropped})" not in ln) + "\n")
    second = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert second.exit_code == 0, second.output
    report = runner.invoke(app, ["links", "--state", "removed", "--format", "json"])
    assert report.exit_code == 0, report.output
    assert [r["url"] for r in json.loads(report.stdout)] == [dropped]
    with Store.open(crawl_settings.store_path) as store:
        assert dropped not in {a.url for a in store.articles()}
        assert store.document(int(json.loads(report.stdout)[0]["id"])) is not None  # kept, just not indexed


def test_a_refresh_that_fails_keeps_the_last_good_text_and_says_so(web: FixtureWeb, crawl_settings: Settings,
                                                                   list_file: Path) -> None:
    from tests.fixtureweb.server import Response, _const

    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    victim = next(u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u)
    with Store.open(crawl_settings.store_path) as store:
        row = next(r for r in store.link_rows() if r["url"] == victim)
        before = store.document(int(row["id"]))  # type: ignore[arg-type]
    web._route(victim, _const(Response(500, b"down for maintenance", "text/plain")))  # the page breaks
    refresh = runner.invoke(app, ["crawl", str(list_file), "--refresh", "--json"])
    assert refresh.exit_code == 0, refresh.output
    with Store.open(crawl_settings.store_path) as store:
        row = next(r for r in store.link_rows() if r["url"] == victim)
        assert row["state"] == "failed"
        assert "HTTP 500" in str(row["reason"])
        assert f"keeping the text fetched on {time.strftime('%Y-%m-%d')}" in str(row["reason"])
        assert store.document(int(row["id"])) == before  # type: ignore[arg-type]
        assert victim in {a.url for a in store.articles()}


def test_an_archived_copy_never_lends_its_validators_to_the_live_site(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite3") as store:
        store.add_links(links("http://x/1"))
        body = FetchedBody("http://archive/web/2015id_/http://x/1", "text/html", b"<p>old</p>", False,
                           etag='"archive-etag"', last_modified="Wed, 01 Jan 2015 00:00:00 GMT")
        store.record_outcome(1, CrawlOutcome(LinkState.ARCHIVED, "from the archive", body=body, from_archive=True))
        assert store.link(1)["etag"] is None and store.link(1)["last_modified"] is None
        assert store.kept_text_date(1) is None  # nothing live to keep or to revalidate


def test_retry_failed_tries_only_failed_links_again(web: FixtureWeb, crawl_settings: Settings,
                                                    list_file: Path) -> None:
    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    with Store.open(crawl_settings.store_path) as store:
        failed = {normalize_url(u) for u, s in states(store).items() if s == "failed"}
    # Every fault meant to fail did; on a busy machine a good link may have timed out too (FAST_CRAWL_ENV's
    # 0.8 s read timeout), and then it is rightly tried again: the retry is checked against what failed.
    assert failed >= {normalize_url(u) for u, s in web.expected_states().items() if s == "failed"}
    hits = {u: web.hits(u) for u in web.expected_states() if u.startswith("http")}
    again = runner.invoke(app, ["crawl", str(list_file), "--retry-failed", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["crawled"] == len(failed)
    tried = {normalize_url(u) for u, n in hits.items() if web.hits(u) > n}
    assert tried and tried <= failed
