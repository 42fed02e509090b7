"""The search page's HTML, fetched from a real server: results, filters, escaping, friendly failures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.serve_fixtures import ServerProcess

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: live_server, built

EXTERNAL_ASSET = re.compile(r"""<(?:link|script|img)[^>]+(?:href|src)=["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def page(live_server: ServerProcess) -> Iterator[httpx.Client]:
    assert live_server.process.poll() is None, live_server.log()
    with httpx.Client(base_url=live_server.base_url, timeout=10.0) as http:
        yield http


def body_of(html: str) -> str:
    return html.split("<body", 1)[1]


def assert_friendly(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    body = body_of(response.text)
    assert says in body, body[:2000]
    assert '"error"' not in body and "Traceback" not in body
    assert '<form class="search"' in body, "the page keeps the search box on errors"


def test_empty_page_has_form_and_sections_and_no_external_assets(page: httpx.Client) -> None:
    response = page.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<input id="q" name="q"' in html and '<select id="section" name="section">' in html
    for section in page.get("/sections").json()["sections"]:
        path, count = section["path"], section["articles"]
        # Subsections are indented under their section: "   Sharding (3)"; the value is the path's headings.
        label = "&nbsp;&nbsp;&nbsp;" * (len(path) - 1) + path[-1]
        assert f'<option value="{"&#31;".join(path)}">{label} ({count})</option>' in html
    assert EXTERNAL_ASSET.search(html) is None, "the page must work offline"
    assert 'href="/static/style.css"' in html
    css = page.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "//" not in re.sub(r"/\*.*?\*/", "", css.text, flags=re.DOTALL), "no external CSS imports or fonts"


def test_results_are_ranked_linked_and_highlighted(page: httpx.Client) -> None:
    html = page.get("/", params={"q": "hot shard tenant"}).text
    api = page.get("/search", params={"q": "hot shard tenant"}).json()
    urls = re.findall(r'<a class="title" href="([^"]+)"', html)
    assert urls == [r["url"] for r in api["results"]], "the page shows the API's ranking"
    assert "<mark>tenant</mark>" in html and "**" not in body_of(html)
    assert '<span class="host">example.com</span>' in html
    assert '<span class="section">Scalability › Sharding</span>' in html
    assert 'value="hot shard tenant"' in html, "the query stays in the box"


def test_archived_copy_is_linked(page: httpx.Client) -> None:
    html = page.get("/", params={"q": "bloom filter false positives"}).text
    from tests.index_fixtures import ARCHIVE_PREFIX

    assert f'<a class="archived" href="{ARCHIVE_PREFIX}' in html


def test_section_in_url_is_selected_and_filters(page: httpx.Client) -> None:
    html = page.get("/", params={"q": "cache", "section": "Performance\x1fCaching"}).text
    assert '<option value="Performance&#31;Caching" selected>' in html
    shown = len(re.findall(r'<li class="result">', html))
    assert 0 < shown <= 4


def test_the_list_filter_is_offered_kept_and_applied(page: httpx.Client) -> None:
    from tests.index_fixtures import MAIN_LIST, PICKS_LIST, PICKS_SLUGS

    empty = page.get("/").text
    assert '<select id="list" name="list">' in empty and '<option value="">All lists</option>' in empty
    assert f'<option value="{PICKS_LIST}">{PICKS_LIST} (3)</option>' in empty
    html = page.get("/", params={"q": "reliability", "list": PICKS_LIST, "k": 50}).text
    assert f'<option value="{PICKS_LIST}" selected>' in html
    assert len(re.findall(r'<li class="result">', html)) == len(PICKS_SLUGS)
    assert html.count(f'<span class="list">{PICKS_LIST}</span>') == len(PICKS_SLUGS)
    assert f'<span class="list">{MAIN_LIST}</span>' in html
    assert_friendly(page.get("/", params={"q": "x", "list": "Nope"}), 400, "unknown list")


def test_markup_in_the_query_is_escaped(page: httpx.Client) -> None:
    html = page.get("/", params={"q": '<script>alert("x")</script> caching'}).text
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("/?q=", 200, "Type a question"),
        ("/?q=%20%20", 200, "Type a question"),
        ("/?q=" + "a" * 600, 400, "limit is 512"),
        ("/?q=caching&k=500", 400, "k must be between 1 and 50"),
        ("/?q=caching&section=Nope", 400, "unknown section"),
        ("/?q=caf%E9", 400, "not valid UTF-8"),
        ("/?q=100%zz", 400, "invalid percent-escape"),
        ("/?q=" + "a" * 9000, 414, "the limit is 8192"),
        ("/?q=caching&host=nowhere.invalid", 200, "on nowhere.invalid"),
    ],
)
def test_bad_input_and_no_results_get_a_friendly_page(page: httpx.Client, query: str, status: int, says: str) -> None:
    assert_friendly(page.get(query), status, says)


def test_wrong_method_on_the_page_is_friendly(page: httpx.Client) -> None:
    assert_friendly(page.post("/"), 405, "method POST is not allowed")
