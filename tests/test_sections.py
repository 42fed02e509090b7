"""Strangers' text is data: section paths, per-list sections, literal CLI output, no secrets served.

A list's headings may hold " / " (once the separator of section and subsection), Rich markup and
HTML; two lists may file one link under different sections; a list's source may hold credentials.
One small collection with all of it is built into a real index (the real model, caches seeded
from the session build) and searched through the searcher, the HTTP API, the page and the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from index.build import build_index
from index.filters import Filters
from index.meta import ArticleColumns, section_path
from index.search import Searcher
from index.snapshot import current_folder
from ingest.errors import BadQueryError
from ingest.listparse import parse_list
from ingest.settings import Settings, load_settings
from ingest.store import Store

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex
    from tests.serve_fixtures import ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: built, start_server

SECRET_URL = "https://reader:hunter2@lists.example.com/awesome/x.md?token=abc#frag"
SECRET_PATH = "/home/someone/private-notes/beta.md"
HOSTILE_HEADING = "Tools [/] [link=https://evil.example/] bold <script>x</script>"
SHARED = "https://shared.example.com/pipelines-and-nesting"

ALPHA = f"""\
# Alpha

## CI / CD

- [Deploy pipelines that never stop the line]({SHARED})
- [Build caches for monorepos](https://ci.example.com/build-caches)

### Runners / Agents

- [Autoscaling build runners](https://ci.example.com/runners)

## A

### B

- [Nested under A then B](https://nested.example.com/b)

## Tools [/] [link=https://evil.example/] <b>bold</b> `<script>x</script>`

- [Bracketed heading tool](https://tools.example.com/bracketed)
"""

# The same link, filed by another list under A › B instead of CI / CD.
BETA = f"""\
# Beta

## A

### B

- [Pipelines, nested by beta]({SHARED})
- [Only beta files this](https://beta.example.com/only)
"""


@dataclass
class HostileIndex:
    settings: Settings
    urls: dict[int, str]  # link id -> url


@pytest.fixture(scope="module")
def hostile_index(built: BuiltIndex, tmp_path_factory: pytest.TempPathFactory) -> HostileIndex:
    """Two lists (one named by a URL with credentials, one by an absolute path) built into a real index."""
    from tests.index_fixtures import seed_caches

    settings = load_settings(data_dir=tmp_path_factory.mktemp("hostile-sections"))
    seed_caches(built.settings, settings)
    with Store.open(settings.store_path) as store:
        store.sync_collection([(SECRET_URL, "alpha", parse_list(ALPHA)), (SECRET_PATH, "beta", parse_list(BETA))])
        build_index(settings, store, embedder=built.embedder)
        urls = {int(r["id"]): str(r["url"]) for r in store.link_rows()}  # type: ignore[call-overload]
    return HostileIndex(settings, urls)


@pytest.fixture(scope="module")
def searcher(hostile_index: HostileIndex) -> Iterator[Searcher]:
    searcher = Searcher.open(hostile_index.settings)
    yield searcher
    searcher.close()


def found(searcher: Searcher, **filters: object) -> set[str]:
    return {r.url for r in searcher.search("pipelines build runners tools nested", k=50, **filters).results}


def test_facets_show_every_heading_exactly(searcher: Searcher) -> None:
    assert searcher.sections() == [
        (("CI / CD",), 3), (("CI / CD", "Runners / Agents"), 1),
        (("A",), 3), (("A", "B"), 3),
        ((HOSTILE_HEADING,), 1),
    ]  # fmt: skip  - no phantom "CI", "CD", "Runners" or "Agents"


def test_a_section_filter_is_its_headings(searcher: Searcher) -> None:
    ci = {SHARED, "https://ci.example.com/build-caches", "https://ci.example.com/runners"}
    assert found(searcher, section="CI / CD") == ci  # one heading, with its subsection
    assert found(searcher, section=["ci / cd", "RUNNERS / AGENTS"]) == {"https://ci.example.com/runners"}
    assert found(searcher, section=("A", "B")) == {SHARED, "https://nested.example.com/b",
                                                   "https://beta.example.com/only"}
    assert found(searcher, section=HOSTILE_HEADING) == {"https://tools.example.com/bracketed"}
    for phantom in ("CI", ("CI", "CD"), ("CI / CD", "Runners")):
        with pytest.raises(BadQueryError, match="unknown section"):
            searcher.search("pipelines", section=phantom)


def test_a_list_and_a_section_mean_filed_there_by_that_list(searcher: Searcher) -> None:
    assert SHARED in found(searcher, section=("A",))  # beta files it under A › B
    assert found(searcher, section=("A",), list_name="alpha") == {"https://nested.example.com/b"}
    assert found(searcher, section=("A", "B"), list_name="beta") == {SHARED, "https://beta.example.com/only"}
    assert found(searcher, section="CI / CD", list_name="beta") == set()  # only alpha files it there
    assert SHARED in found(searcher, section="CI / CD", list_name="alpha")


def test_a_snapshot_without_filing_lists_says_to_rebuild_for_list_and_section(hostile_index: HostileIndex,
                                                                              tmp_path: Path) -> None:
    """A snapshot from before format 4 has no `article_label_list`: a section filter still works, a list and
    a section together cannot be told and say so."""
    folder = tmp_path / "older"
    shutil.copytree(current_folder(hostile_index.settings.snapshots_dir, hostile_index.settings.data_dir), folder)
    (folder / "columns" / "article_label_list.npy").unlink()
    columns = ArticleColumns(folder)
    filters = Filters(columns)
    allowed = filters.rows(("A", "B"), None)
    assert allowed is not None
    articles = np.unique(columns.row_article[allowed.rows])
    assert {hostile_index.urls[int(columns.ids[i])] for i in articles} == {
        SHARED, "https://nested.example.com/b", "https://beta.example.com/only"}
    with pytest.raises(BadQueryError, match="rebuild it to filter by list and section together"):
        filters.rows(("A",), None, "alpha")
    assert section_path("Scalability / Sharding") == ("Scalability", "Sharding")  # how format 3 labels read


def test_the_api_and_the_page_filter_and_show_sections_exactly_and_serve_no_secret(
        hostile_index: HostileIndex, start_server: ServerStarter) -> None:
    with start_server(hostile_index.settings.data_dir) as server, httpx.Client(base_url=server.base_url) as http:
        sections = http.get("/sections").json()["sections"]
        runners = {"name": "CI / CD › Runners / Agents", "path": ["CI / CD", "Runners / Agents"], "articles": 1}
        assert runners in sections
        one = http.get("/search", params={"q": "pipelines", "section": "CI / CD", "k": 50}).json()["results"]
        assert {r["url"] for r in one} == {SHARED, "https://ci.example.com/build-caches",
                                           "https://ci.example.com/runners"}
        nested = http.get("/search", params=[("q", "pipelines"), ("list", "alpha"), ("section", "A"),
                                             ("section", "B")]).json()["results"]
        assert [r["url"] for r in nested] == ["https://nested.example.com/b"]
        assert http.get("/search", params={"q": "x", "section": "CI"}).status_code == 400

        lists = http.get("/lists").json()["lists"]
        assert [(x["name"], x["url"]) for x in lists] == [("alpha", "https://lists.example.com/awesome/x.md"),
                                                          ("beta", "beta.md")]
        page = http.get("/", params=[("q", "bracketed heading tool"), ("section", HOSTILE_HEADING)]).text
        assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
        assert 'value="A&#31;B"' in page  # a subsection's menu value: its headings, joined by U+001F
        nested_page = http.get("/", params={"q": "pipelines", "section": "A\x1fB", "list": "beta"}).text
        assert 'value="A&#31;B" selected' in nested_page and "https://beta.example.com/only" in nested_page
        served = "\n".join(http.get(path).text for path in ("/lists", "/sections", "/", "/openapi.json", "/readyz"))
        served += "\n" + http.get("/search", params={"q": "pipelines", "k": 50}).text
    snapshot = current_folder(hostile_index.settings.snapshots_dir, hostile_index.settings.data_dir)
    on_disk = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in snapshot.rglob("*")
                        if p.is_file() and p.suffix in (".json", ".sqlite3"))
    for secret in ("hunter2", "token=abc", "private-notes", "/home/someone"):
        assert secret not in served, secret
        assert secret not in on_disk, secret
        assert secret not in server.log(), secret
    with Store.open(hostile_index.settings.store_path) as store:  # the machine keeps the whole source
        assert [r["source"] for r in store.lists()] == [SECRET_URL, SECRET_PATH]


# Titles a stranger can put in a list: Rich markup that crashes ("[/]"), that would make a hyperlink, that
# would style. Reasons quote servers: a raw terminal hyperlink (OSC 8) and an emoji code.
HOSTILE_TITLES = ["Closing tag [/] on its own", "[link=https://evil.example/]click me[/link]",
                  "[bold red]loud[/bold red] title"]
HOSTILE_REASON = "server said [/] :warning: \x1b]8;;https://evil.example/\x1b\\raw hyperlink\x1b]8;;\x1b\\"
HOSTILE_SECTION = "[/] Tools [link=https://evil.example/]x[/link]"


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_links_shows_hostile_titles_and_reasons_as_literal_text(tmp_path: Path, fmt: str) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    markdown = f"# Hostile\n\n## {HOSTILE_SECTION}\n\n" + "".join(
        f"- [{title}](https://t{i}.example.com/)\n" for i, title in enumerate(HOSTILE_TITLES))
    with Store.open(settings.store_path) as store:
        store.sync_list("/lists/hostile.md", "hostile", parse_list(markdown))
        for row in store.link_rows():
            store.record_failure(int(row["id"]), HOSTILE_REASON)  # type: ignore[call-overload]
        assert [r["title"] for r in store.link_rows()] == HOSTILE_TITLES
    # A terminal, so that styles and hyperlinks would be written as escape sequences if any were made.
    env = dict(os.environ, LINKLENS_DATA_DIR=str(settings.data_dir), FORCE_COLOR="1", TERM="xterm-256color",
               COLUMNS="400")
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "links", "--format", fmt], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "\x1b]" not in proc.stdout, "no terminal hyperlink, no raw escape from a stranger"
    shown = strip_styles(proc.stdout)
    for literal in (*HOSTILE_TITLES, HOSTILE_SECTION, "server said [/] :warning: \\x1b]8;;https://evil.example/"):
        assert literal in shown, (literal, shown)


def strip_styles(text: str) -> str:
    """The output without SGR style sequences (ESC [ ... m), which the forced terminal adds."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_search_results_show_hostile_titles_literally(hostile_index: HostileIndex) -> None:
    env = dict(os.environ, LINKLENS_DATA_DIR=str(hostile_index.settings.data_dir), FORCE_COLOR="1",
               TERM="xterm-256color", COLUMNS="400")
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "search", "bracketed heading tool", "--section",
                           HOSTILE_HEADING], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b]8;" not in proc.stdout
    assert f"{HOSTILE_HEADING} ·" in strip_styles(proc.stdout)
    unknown = subprocess.run([sys.executable, "-m", "cli.main", "search", "x", "--section", "[/] [link=x]y"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "unknown section '[/] [link=x]y'" in strip_styles(unknown.stderr)


def test_a_list_url_without_a_path_is_named_by_its_host_not_its_secrets() -> None:
    from ingest.sources import list_name

    assert list_name("https://reader:hunter2@lists.example.com?token=abc") == "lists.example.com"
