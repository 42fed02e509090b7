"""A real browser (Debian's chromium via Playwright) uses the search page: type, submit, read results.

Without /usr/bin/chromium the test fails (never skips: a page nobody tested would pass as green)
and says how to install it; `make test` installs it (`make browser`). `playwright install` is
never used: it downloads a browser. The screenshot is kept in the test's tmp folder; its path is
printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

    from tests.serve_fixtures import ServerProcess

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: live_server, built

try:
    import playwright.sync_api as playwright_sync
except ImportError:  # a dev dependency: missing means the environment was not installed with [dev]
    raise ImportError("the page test needs Playwright — install the dev extra: pip install -e '.[dev]' "
                      "(or run: make test)") from None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
QUESTION = "how to avoid a hot shard when one tenant sends most traffic"


@pytest.fixture
def browser_page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"the page test needs Chromium at {CHROMIUM}, which is not installed — install it with: "
                    "make browser (or: sudo apt-get install chromium)", pytrace=False)
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_type_a_question_and_see_ranked_highlighted_results(
    browser_page: Page,
    live_server: ServerProcess,
    tmp_path: Path,
) -> None:
    page = browser_page
    off_host: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(live_server.base_url) else off_host.append(r.url))

    page.goto(f"{live_server.base_url}/")
    assert page.locator("#section option").count() > 1, "sections are listed"
    page.fill("#q", QUESTION)
    page.select_option("#section", "Scalability")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li.result")

    params = parse_qs(urlsplit(page.url).query)
    assert params["q"] == [QUESTION] and params["section"] == ["Scalability"], "the URL carries the search"
    titles = page.locator("li.result a.title")
    assert titles.count() >= 3
    assert "Melted Our Cluster" in titles.first.inner_text()
    assert (titles.first.get_attribute("href") or "").endswith("/hot-shards-key-salting")
    marks = page.locator("li.result").first.locator("mark")
    assert marks.count() > 0 and marks.first.inner_text().lower() in QUESTION.lower()
    assert page.locator("#section").input_value() == "Scalability"
    assert off_host == [], "the page loads nothing from other hosts"

    screenshot = tmp_path / "search-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    print(f"search page screenshot: {screenshot}")


def test_a_subsection_chosen_in_the_menu_comes_back_as_its_path(browser_page: Page, live_server: ServerProcess) -> None:
    """The menu's value for a subsection joins its headings with U+001F; a real browser sends it, the page
    filters by that path and shows it chosen again."""
    page = browser_page
    page.goto(f"{live_server.base_url}/")
    page.fill("#q", "shards")
    page.select_option("#section", "Scalability\x1fSharding")
    page.click("button[type=submit]")
    page.wait_for_selector("ol.results li.result")
    assert parse_qs(urlsplit(page.url).query)["section"] == ["Scalability\x1fSharding"]
    assert page.locator("li.result").count() == 3  # the articles filed under Scalability › Sharding
    assert page.locator("#section").input_value() == "Scalability\x1fSharding"


def test_shared_link_and_friendly_error_in_the_browser(
    browser_page: Page,
    live_server: ServerProcess,
) -> None:
    page = browser_page
    page.goto(f"{live_server.base_url}/?q=consistent+hashing+ring")
    assert page.locator("li.result").count() > 0 and page.locator("#q").input_value() == "consistent hashing ring"
    page.goto(f"{live_server.base_url}/?q=caching&section=No+Such+Section")
    alert = page.locator("p.message[role=alert]")
    assert "unknown section" in alert.inner_text()
    assert "{" not in page.locator("body").inner_text()


def test_api_docs_render_with_every_other_host_blocked(browser_page: Page, live_server: ServerProcess) -> None:
    """/docs is Swagger UI served by linklens itself: it renders the operations with the network cut off."""
    page = browser_page
    blocked: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(live_server.base_url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{live_server.base_url}/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = {text.strip().replace("\u200b", "") for text in page.locator(".opblock-summary-path").all_inner_texts()}
    assert {"/search", "/sections", "/healthz"} <= paths, paths
    assert "linklens" in page.locator(".title").first.inner_text()
    assert blocked == [], f"/docs tried to load from other hosts: {blocked}"


def test_a_list_title_full_of_script_is_shown_as_text(browser_page: Page, live_server: ServerProcess) -> None:
    from tests.index_fixtures import PENDING_TITLE

    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live_server.base_url}/?q=video+transcoding+pipeline")
    first = page.locator("li.result").first
    assert first.locator("a.title").inner_text() == PENDING_TITLE  # the tags are its text
    assert page.locator("li.result script").count() == 0
    assert page.evaluate("window.pwned === undefined") and dialogs == []
