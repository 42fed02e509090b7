"""Collections: several lists crawled as one, lists of lists, list names and filters, dropping a list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ingest.collection import distinct_names
from ingest.models import Filing, ListedLink, ListPlacement
from ingest.settings import Settings
from ingest.sources import BUNDLED_KEY, github_repo, list_name
from ingest.store import Store
from tests.conftest import PATIENT_DEADLINES_ENV
from tests.fixtureweb import FixtureWeb
from tests.fixtureweb.server import Response, _const
from tests.index_fixtures import BuiltIndex, seed_caches

pytest_plugins = ["tests.index_fixtures"]  # the session index: built (its caches seed the build below)

runner = CliRunner()


# No link these tests crawl stalls or fails on purpose, and they count every state and every request
# (hits): FAST_CRAWL_ENV's 0.8 s read / 2 s request deadlines let a busy machine (load ~25) turn a slow
# answer into a retry (a hit counted twice), a skipped list or a failed link.
@pytest.fixture
def crawl_env(crawl_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The conftest's fast crawl environment with the production deadlines (PATIENT_DEADLINES_ENV)."""
    for key, value in PATIENT_DEADLINES_ENV.items():
        monkeypatch.setenv(key, value)
    return {**crawl_env, **PATIENT_DEADLINES_ENV}


def links(*urls: str, section: str = "Reading") -> list[ListedLink]:
    return [ListedLink(u, [ListPlacement((section,), f"Title of {u}", i)]) for i, u in enumerate(urls)]


def states(store: Store) -> dict[str, str]:
    return {str(r["url"]): str(r["state"]) for r in store.link_rows()}


def ok_posts(web: FixtureWeb, n: int) -> list[str]:
    found = [u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u]
    assert len(found) >= n
    return found[:n]


def markdown_list(title: str, urls: list[str], section: str) -> str:
    items = "\n".join(f"* [{title} item {i}]({u}) - an article." for i, u in enumerate(urls))
    return f"# {title}\n\nA list.\n\n## {section}\n\n{items}\n"


def serve(web: FixtureWeb, path: str, text: str, content_type: str = "text/markdown; charset=utf-8") -> str:
    url = f"{web.archive_url}{path}"
    web._route(url, _const(Response(200, text.encode(), content_type)))
    return url


def test_a_link_two_lists_cite_is_one_article_that_remembers_both(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite3") as store:
        sync = store.sync_collection([("/a.md", "a", links("http://x/1", "http://x/2", section="Alpha")),
                                      ("/b.md", "b", links("http://x/2", "http://x/3", section="Beta"))])
        assert [s.added for s in sync.lists] == [2, 1] and sync.dropped == []
        articles = {a.url: a for a in store.articles()}
        assert list(articles) == ["http://x/1", "http://x/2", "http://x/3"]  # list a's order, then list b's
        assert articles["http://x/2"].lists == ["a", "b"]
        assert articles["http://x/2"].sections == [("Alpha",), ("Beta",)]
        assert articles["http://x/2"].filings == [Filing("a", ("Alpha",)), Filing("b", ("Beta",))]
        assert articles["http://x/3"].lists == ["b"]
        b_rows = store.link_rows(list_id=sync.lists[1].list_id)
        assert [r["url"] for r in b_rows] == ["http://x/2", "http://x/3"]
        assert b_rows[0]["sections"] == [["Beta"]]  # one list's report: that list's sections only
        assert {str(r["name"]): r["states"] for r in store.lists()} == {"a": {"pending": 2}, "b": {"pending": 2}}


def test_dropping_a_list_removes_only_the_links_no_other_list_cites(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite3") as store:
        a, b = links("http://x/1", "http://x/2"), links("http://x/2", "http://x/3")
        store.sync_collection([("/a.md", "a", a), ("/b.md", "b", b)])
        sync = store.sync_collection([("/a.md", "a", a)])
        assert sync.dropped == ["b"] and sync.removed == 1
        assert states(store) == {"http://x/1": "pending", "http://x/2": "pending", "http://x/3": "removed"}
        removed = next(r for r in store.link_rows() if r["url"] == "http://x/3")
        assert "its list b was dropped" in str(removed["reason"]) and removed["lists"] == []
        assert [a.lists for a in store.articles()] == [["a"], ["a"]]
        dropped = next(r for r in store.lists() if r["name"] == "b")
        assert dropped["dropped_at"] is not None and dropped["links"] == 0
        assert [r["name"] for r in store.lists(include_dropped=False)] == ["a"]
        # a list that could not be read this time is kept, not dropped
        store.sync_collection([("/b.md", "b", b)], keep=["/a.md"])
        assert states(store)["http://x/1"] == "pending" and states(store)["http://x/3"] == "pending"
        assert [r["name"] for r in store.lists(include_dropped=False)] == ["a", "b"]


def test_lists_of_the_same_short_name_get_distinct_names() -> None:
    keys = ["https://github.com/alice/awesome-go", "https://github.com/bob/awesome-go", "/srv/team/awesome-go.md",
            "/srv/lists/python/README.md", BUNDLED_KEY]
    assert distinct_names(keys) == ["alice/awesome-go", "bob/awesome-go", "team/awesome-go", "python",
                                    "awesome-scalability"]
    assert distinct_names(["/a/x/list.md", "/b/x/list.md"]) == ["x/list", "x/list (2)"]
    assert list_name("https://raw.githubusercontent.com/o/awesome-rust/HEAD/README.md") == "awesome-rust"
    assert github_repo("https://github.com/o/r.git") == ("o", "r")
    assert github_repo("https://github.com/o/r/issues") is None


@pytest.fixture
def two_lists(web: FixtureWeb, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Two list files sharing two of their links: urls[0:4] in alpha, urls[2:6] in beta."""
    urls = ok_posts(web, 6)
    alpha = tmp_path / "alpha" / "awesome-alpha.md"
    beta = tmp_path / "awesome-beta.md"
    alpha.parent.mkdir()
    alpha.write_text(markdown_list("Alpha", urls[:4], "Alpha reading"))
    beta.write_text(markdown_list("Beta", urls[2:6], "Beta reading"))
    return alpha, beta, urls


def test_crawl_of_two_lists_then_one_drops_the_other_and_a_bare_crawl_keeps_the_collection(
        crawl_settings: Settings, two_lists: tuple[Path, Path, list[str]]) -> None:
    alpha, beta, urls = two_lists
    first = runner.invoke(app, ["crawl", str(alpha), str(beta), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert [(x["name"], x["links"], x["new"]) for x in summary["lists"]] == [("awesome-alpha", 4, 4),
                                                                           ("awesome-beta", 4, 2)]
    assert summary["crawled"] == 6 and summary["states"] == {"ok": 6}

    report = runner.invoke(app, ["links", "--list", "AWESOME-BETA", "--format", "json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.stdout)
    assert [r["url"] for r in rows] == urls[2:6]
    assert rows[0]["lists"] == ["awesome-alpha", "awesome-beta"] and rows[0]["sections"] == [["Beta reading"]]
    markdown = runner.invoke(app, ["links", "--list", "awesome-beta", "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.startswith(f"# Link health of awesome-beta\n\nList: {beta.resolve()}\n")
    assert "ok: 4" in markdown.stdout and "Every link is healthy." in markdown.stdout
    unknown = runner.invoke(app, ["links", "--list", "gamma"])
    assert unknown.exit_code == 1
    assert "no list called 'gamma'" in unknown.output and "'awesome-alpha', 'awesome-beta'" in unknown.output

    only_alpha = runner.invoke(app, ["crawl", str(alpha), "--json"])
    assert only_alpha.exit_code == 0, only_alpha.output
    assert json.loads(only_alpha.stdout)["dropped_lists"] == ["awesome-beta"]
    removed = runner.invoke(app, ["links", "--state", "removed", "--format", "json"])
    assert [r["url"] for r in json.loads(removed.stdout)] == urls[4:6]  # urls[2:4] are still alpha's

    bare = runner.invoke(app, ["crawl", "--json"])  # the collection named last: alpha alone, not the bundled list
    assert bare.exit_code == 0, bare.output
    again = json.loads(bare.stdout)
    assert [x["name"] for x in again["lists"]] == ["awesome-alpha"] and again["crawled"] == 0
    listed = runner.invoke(app, ["lists", "--json", "--dropped"])
    assert listed.exit_code == 0, listed.output
    by_name = {x["name"]: x for x in json.loads(listed.stdout)}
    assert by_name["awesome-alpha"]["states"] == {"ok": 4} and by_name["awesome-alpha"]["crawled_at"]
    assert by_name["awesome-beta"]["dropped_at"] and by_name["awesome-beta"]["links"] == 0


def test_lists_from_reads_every_list_it_links_to_and_reports_the_ones_it_cannot(
        web: FixtureWeb, crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINKLENS_GITHUB_RAW_URL", f"{web.archive_url}/raw")
    urls = ok_posts(web, 5)
    plain = serve(web, "/lists/awesome-plain.md", markdown_list("Plain", urls[:2], "Plain"))
    serve(web, "/raw/alice/awesome-upper/HEAD/README.md", markdown_list("Upper", urls[1:3], "Upper"))
    serve(web, "/raw/bob/awesome-lower/HEAD/readme.md", markdown_list("Lower", urls[3:5], "Lower"))
    html = serve(web, "/lists/a-page.html", "<html><body>not a list</body></html>", "text/html")
    empty = serve(web, "/lists/empty.md", "# Nothing\n\nNo links here.\n")
    parent = tmp_path / "awesome-awesome.md"
    parent.write_text("# Awesome awesome\n\n## Lists\n\n"
                      f"* [Plain]({plain})\n"
                      "* [Upper](https://github.com/alice/awesome-upper)\n"
                      "* [Lower](https://github.com/bob/awesome-lower#readme)\n"
                      "* [Gone](https://github.com/carol/no-readme)\n"
                      f"* [Page]({html})\n"
                      f"* [Empty]({empty})\n")

    result = runner.invoke(app, ["crawl", "--lists-from", str(parent), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(x["name"], x["links"]) for x in summary["lists"]] == [("awesome-plain", 2), ("awesome-upper", 2),
                                                                  ("awesome-lower", 2)]
    assert summary["crawled"] == 5 and summary["states"] == {"ok": 5}
    skipped = {x["source"]: x["reason"] for x in summary["skipped_lists"]}
    assert list(skipped) == ["https://github.com/carol/no-readme", html, empty]
    gone = skipped["https://github.com/carol/no-readme"]
    assert "no README.md or readme.md on its default branch" in gone
    assert f"{web.archive_url}/raw/carol/no-readme/HEAD/readme.md" in gone
    assert "is an HTML page" in skipped[html] and "holds no list links" in skipped[empty]
    assert "skipped https://github.com/carol/no-readme" in result.stderr  # also told on stderr

    # the raw host had the list: the README is what was read, from the configured host
    assert web.hits(f"{web.archive_url}/raw/bob/awesome-lower/HEAD/README.md") == 1
    report = runner.invoke(app, ["links", "--list", "awesome-upper", "--format", "json"])
    assert report.exit_code == 0, report.output
    assert [r["lists"] for r in json.loads(report.stdout)] == [["awesome-plain", "awesome-upper"], ["awesome-upper"]]
    listed = json.loads(runner.invoke(app, ["lists", "--json"]).stdout)
    assert [x["url"] for x in listed] == [plain, "https://github.com/alice/awesome-upper",
                                          "https://github.com/bob/awesome-lower"]

    again = runner.invoke(app, ["crawl", "--json"])  # a bare crawl reads the list of lists again
    assert again.exit_code == 0, again.output
    replay = json.loads(again.stdout)
    assert [x["name"] for x in replay["lists"]] == ["awesome-plain", "awesome-upper", "awesome-lower"]
    assert len(replay["skipped_lists"]) == 3 and replay["dropped_lists"] == []
    assert web.hits(f"{web.archive_url}/raw/bob/awesome-lower/HEAD/readme.md") == 2


def test_a_bare_crawl_of_a_store_from_before_collections_keeps_the_lists_it_holds(
        crawl_settings: Settings, two_lists: tuple[Path, Path, list[str]]) -> None:
    alpha, beta, urls = two_lists
    with Store.open(crawl_settings.store_path) as store:  # synced one by one, as crawls did before collections
        store.sync_list(str(alpha), "awesome-alpha", links(*urls[:4]))
        store.sync_list(str(beta), "awesome-beta", links(*urls[2:6]))
    result = runner.invoke(app, ["crawl", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [x["name"] for x in summary["lists"]] == ["awesome-alpha", "awesome-beta"]
    assert summary["dropped_lists"] == [] and summary["states"] == {"ok": 6}


def test_a_list_of_lists_that_cannot_be_read_stops_before_anything_changes(
        crawl_settings: Settings, two_lists: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    alpha, _, _ = two_lists
    assert runner.invoke(app, ["crawl", str(alpha), "--json"]).exit_code == 0
    missing = runner.invoke(app, ["crawl", "--lists-from", str(tmp_path / "nope.md")])
    assert missing.exit_code == 1 and "no such file" in missing.output and "Traceback" not in missing.output
    no_lists = tmp_path / "no-lists.md"
    no_lists.write_text("# Awesome awesome\n\nNothing listed yet.\n")
    empty = runner.invoke(app, ["crawl", "--lists-from", str(no_lists)])
    assert empty.exit_code == 1 and "links to no lists" in empty.output
    with Store.open(crawl_settings.store_path) as store:
        assert set(states(store).values()) == {"ok"}
        assert [r["name"] for r in store.lists(include_dropped=False)] == ["awesome-alpha"]


def test_build_of_two_lists_indexes_one_article_per_link_and_search_filters_by_list(
        crawl_settings: Settings, built: BuiltIndex, two_lists: tuple[Path, Path, list[str]]) -> None:
    alpha, beta, urls = two_lists
    seed_caches(built.settings, crawl_settings)
    result = runner.invoke(app, ["build", str(alpha), str(beta), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [x["name"] for x in report["crawl"]["lists"]] == ["awesome-alpha", "awesome-beta"]
    assert report["index"]["articles"] == 6

    found = runner.invoke(app, ["search", "how do systems scale", "--k", "50", "--list", "awesome-beta", "--json"])
    assert found.exit_code == 0, found.output
    results = json.loads(found.stdout)["results"]
    assert {r["url"] for r in results} == set(urls[2:6])
    assert {tuple(r["lists"]) for r in results} == {("awesome-alpha", "awesome-beta"), ("awesome-beta",)}
    unknown = runner.invoke(app, ["search", "scale", "--list", "gamma"])
    assert unknown.exit_code == 1 and "valid lists: 'awesome-alpha', 'awesome-beta'" in unknown.output


def test_an_article_row_keeps_its_lists() -> None:
    from cli.engines.datasets import article_from_row, article_row, article_tables
    from ingest.models import Article, Document, Filing, LinkState

    filings = [Filing("alpha", ("CI / CD", "[B]")), Filing("beta", ("A",))]
    article = Article(7, "http://x/7", "x", "Seven", filings, LinkState.OK, None, None,
                      Document("T", "text", "html"), lists=["alpha", "beta"])
    assert article_from_row(article_row(article, 0)) == article
    table = next(article_tables([article]))
    assert table.column("lists").to_pylist() == [["alpha", "beta"]]


def test_a_list_of_lists_is_bounded_in_lists_and_in_bytes(
        web: FixtureWeb, crawl_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from collections.abc import AsyncIterator

    from ingest.sources import MAX_LIST_BYTES

    monkeypatch.setenv("LINKLENS_MAX_LISTS", "2")
    urls = ok_posts(web, 2)
    small = serve(web, "/lists/awesome-small.md", markdown_list("Small", urls, "Small"))
    chunk = b"* [padding](https://example.invalid/x) " * 1600  # ~64 KB of list items, sent until the cap

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(MAX_LIST_BYTES // len(chunk) + 2):
            yield chunk

    huge = f"{web.archive_url}/lists/awesome-huge.md"
    web._route(huge, _const(Response(200, content_type="text/markdown", stream=endless,
                                     length=(MAX_LIST_BYTES // len(chunk) + 2) * len(chunk))))
    parent = tmp_path / "awesome-awesome.md"
    parent.write_text(f"# A\n\n## Lists\n\n* [Small]({small})\n* [Huge]({huge})\n* [Third]({small}?again)\n")

    result = runner.invoke(app, ["crawl", "--lists-from", str(parent), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [x["name"] for x in summary["lists"]] == ["awesome-small"] and summary["crawled"] == 2
    reasons = [x["reason"] for x in summary["skipped_lists"]]
    assert reasons[0] == "1 more lists beyond the limit of 2 (LINKLENS_MAX_LISTS)"
    assert reasons[1] == f"{huge} is larger than 20 MB — that is not a link list"
