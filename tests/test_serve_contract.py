"""Contract tests against a real uvicorn process on loopback serving the fixture index.

These pin what clients rely on: the response shapes, the one error shape for every
kind of bad input, readiness, and the metrics a dashboard reads.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex
    from tests.serve_fixtures import ServerProcess, ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: live_server, built

WORKERS_READY_TIMEOUT_S = 30.0
RESULT_KEYS = ["rank", "url", "title", "section", "section_path", "lists", "host", "score", "snippet", "archived_url"]
ERROR_KEYS = {"status", "code", "message"}


@pytest.fixture
def client(live_server: ServerProcess) -> Iterator[httpx.Client]:
    assert live_server.process.poll() is None, live_server.log()
    with httpx.Client(base_url=live_server.base_url, timeout=10.0) as http:
        yield http


def assert_error(response: httpx.Response, status: int, code: str = "bad_request") -> str:
    """The one error shape; returns the message for further checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


def raw_request(server: ServerProcess, target: bytes, method: bytes = b"GET") -> bytes:
    """Send a request line httpx would refuse to build (raw non-ASCII bytes); return the whole answer, bytes as sent."""
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- successful responses ----------------------------------------------------------------------


def test_search_returns_exactly_the_documented_shape(client: httpx.Client) -> None:
    response = client.get("/search", params={"q": "one tenant overloads a single shard", "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["query", "took_ms", "results"]
    assert body["query"] == "one tenant overloads a single shard"
    assert isinstance(body["took_ms"], float)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    for result in body["results"]:
        assert list(result) == RESULT_KEYS
        assert result["url"].startswith("https://") and result["title"] and result["host"]
        assert isinstance(result["score"], float)
    assert body["results"][0]["url"].endswith("/hot-shards-key-salting")
    assert "**" in body["results"][0]["snippet"], "matched terms are marked"
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    timing = response.headers["server-timing"]
    assert timing.startswith("app;dur=") and float(timing.partition("dur=")[2]) >= body["took_ms"] > 0


def test_search_defaults_to_ten_and_honours_k_bounds(client: httpx.Client) -> None:
    assert len(client.get("/search", params={"q": "caching"}).json()["results"]) == 10
    assert len(client.get("/search", params={"q": "caching", "k": 1}).json()["results"]) == 1
    assert len(client.get("/search", params={"q": "caching", "k": 50}).json()["results"]) <= 50


def test_search_filters_by_section_and_host(client: httpx.Client) -> None:
    counts = dict((tuple(s["path"]), s["articles"]) for s in client.get("/sections").json()["sections"])
    subsection = [("q", "cache"), ("section", "Performance"), ("section", "Caching"), ("k", "50")]
    in_section = client.get("/search", params=subsection).json()
    # `section` shows an article's first placement; one article is also listed elsewhere first.
    assert 0 < len(in_section["results"]) <= counts["Performance", "Caching"] < counts["Performance",]
    assert {tuple(r["section_path"]) for r in in_section["results"]} <= {("Performance", "Caching"),
                                                                          ("Scalability", "Sharding")}
    on_host = client.get("/search", params={"q": "cache", "host": "blog.example.net"}).json()
    assert on_host["results"] and {r["host"] for r in on_host["results"]} == {"blog.example.net"}
    nowhere = client.get("/search", params={"q": "cache", "host": "nowhere.invalid"})
    assert nowhere.status_code == 200 and nowhere.json()["results"] == []


def test_search_shows_the_archived_copy_when_there_is_one(client: httpx.Client) -> None:
    body = client.get("/search", params={"q": "bloom filter false positives", "k": 1}).json()
    from tests.index_fixtures import ARCHIVE_PREFIX

    assert body["results"][0]["archived_url"].startswith(ARCHIVE_PREFIX)


def test_repeated_search_is_identical_apart_from_timing(client: httpx.Client) -> None:
    params: dict[str, str | int] = {"q": "leader election with raft", "k": 5}
    first, second = client.get("/search", params=params).json(), client.get("/search", params=params).json()
    assert first["results"] == second["results"] and first["query"] == second["query"]


def test_article_similar_and_sections(client: httpx.Client) -> None:
    article = client.get("/articles/1")
    assert article.status_code == 200, article.text
    body = article.json()
    assert body["id"] == 1 and body["url"].startswith("https://") and body["state"] == "ok"
    assert body["passages"] and {"ordinal", "text"} <= set(body["passages"][0])
    similar = client.get("/articles/1/similar", params={"k": 4}).json()
    assert list(similar) == ["query", "took_ms", "results"] and len(similar["results"]) == 4
    assert body["url"] not in [r["url"] for r in similar["results"]], "an article is not similar to itself"
    sections = client.get("/sections").json()["sections"]
    assert {"name": "Scalability › Sharding", "path": ["Scalability", "Sharding"], "articles": 3} in sections
    assert [s["name"] for s in sections if s["path"] == ["Scalability"]] == ["Scalability"]
    assert all(isinstance(s["articles"], int) and s["articles"] > 0 for s in sections)


def test_search_filters_by_list_and_lists_describes_each(client: httpx.Client) -> None:
    from tests.index_fixtures import MAIN_LIST, PICKS_LIST, PICKS_SLUGS

    picks = client.get("/search", params={"q": "how to spread load", "list": PICKS_LIST.upper(), "k": 50}).json()
    assert len(picks["results"]) == len(PICKS_SLUGS)
    assert all(r["lists"] == [MAIN_LIST, PICKS_LIST] for r in picks["results"])
    everything = client.get("/search", params={"q": "how to spread load", "k": 50}).json()["results"]
    assert len(everything) > len(PICKS_SLUGS) and {MAIN_LIST} in [set(r["lists"]) for r in everything]
    lists = client.get("/lists").json()["lists"]
    assert [(x["name"], x["url"], x["articles"]) for x in lists] == [
        (MAIN_LIST, f"{MAIN_LIST}.md", len(everything)), (PICKS_LIST, f"{PICKS_LIST}.md", 3)]  # file names only
    assert lists[0]["states"] == {"archived": 1, "dead": 1, "ok": len(everything) - 3, "pending": 1}
    assert lists[1]["states"] == {"archived": 1, "ok": 2} and lists[1]["crawled_at"] is None  # never crawled


def test_health_readiness_and_docs(client: httpx.Client, built: BuiltIndex) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "snapshot_id": built.report.snapshot_id}
    assert "/search" in client.get("/openapi.json").json()["paths"]


def test_docs_page_loads_its_assets_from_this_server(client: httpx.Client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), docs.text
    for asset in assets:
        assert asset.startswith("/"), f"{asset} would leave this server"
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in docs.text
    assert client.get("/redoc").status_code == 404, "FastAPI's CDN-backed ReDoc page stays off"


def test_metrics_expose_routes_status_latency_and_index(client: httpx.Client, built: BuiltIndex) -> None:
    client.get("/search", params={"q": "metrics probe"})
    client.get("/search", params={"q": ""})
    client.get("/articles/1")
    client.get("/no/such/route")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'linklens_http_requests_total{method="GET",route="/search",status="200"}' in text
    assert 'linklens_http_requests_total{method="GET",route="/search",status="400"}' in text
    assert 'linklens_http_requests_total{method="GET",route="/articles/{article_id}",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'linklens_http_request_duration_seconds_bucket{le="0.015",method="GET",route="/search",status="200"}' in text
    report = built.report
    assert f"linklens_index_passages {float(report.passages)}" in text
    assert f"linklens_index_articles {float(report.articles)}" in text
    assert f'linklens_index_snapshot_info{{snapshot_id="{report.snapshot_id}"}} 1.0' in text


# -- every kind of bad input gets the one error shape ------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "code", "says"),
    [
        ("/search", 400, "bad_request", "q must not be empty"),
        ("/search?q=", 400, "bad_request", "q must not be empty"),
        ("/search?q=%20%09%0A", 400, "bad_request", "q must not be empty"),
        ("/search?q=" + "a" * 513, 400, "bad_request", "limit is 512"),
        ("/search?q=x&k=0", 400, "bad_request", "k: input should be greater than or equal to 1"),
        ("/search?q=x&k=51", 400, "bad_request", "k: input should be less than or equal to 50"),
        ("/search?q=x&k=ten", 400, "bad_request", "k: input should be a valid integer"),
        ("/search?q=x&k=1.5", 400, "bad_request", "k: input should be a valid integer"),
        ("/search?q=x&section=Nope", 400, "bad_request", "valid sections: 'Scalability'"),
        ("/search?q=x&list=Nope", 400, "bad_request", "valid lists: 'awesome-fixture', 'fixture-picks'"),
        ("/search?q=100%zz", 400, "bad_request", "invalid percent-escape '%zz'"),
        ("/search?q=50%", 400, "bad_request", "invalid percent-escape"),
        ("/search?q=caf%E9", 400, "bad_request", "not valid UTF-8"),
        ("/search?q=%C3%28", 400, "bad_request", "not valid UTF-8"),
        ("/search?q=" + "a" * 9000, 414, "uri_too_long", "the limit is 8192"),
        ("/search?q=" + "a" * 60000, 414, "uri_too_long", "the limit is 8192"),
        ("/articles/abc", 400, "bad_request", "article_id: input should be a valid integer"),
        ("/articles/0", 400, "bad_request", "article_id: input should be greater than or equal to 1"),
        ("/articles/99999999999999999999999", 400, "bad_request", "article_id"),
        ("/articles/99999", 404, "not_found", "no article 99999"),
        ("/articles/99999/similar", 404, "not_found", "no article 99999"),
        ("/articles/1/similar?k=0", 400, "bad_request", "k: input should be greater than or equal to 1"),
        ("/no/such/route", 404, "not_found", "no such page '/no/such/route'"),
        ("/static/missing.css", 404, "not_found", "no such page"),
    ],
)
def test_bad_input_gets_the_one_error_shape(client: httpx.Client, path: str, status: int, code: str, says: str) -> None:
    message = assert_error(client.get(path), status, code)
    assert says in message, message


def test_section_error_lists_every_valid_section(client: httpx.Client) -> None:
    message = assert_error(client.get("/search", params={"q": "x", "section": "Nope"}), 400)
    for section in client.get("/sections").json()["sections"]:
        assert " › ".join(repr(heading) for heading in section["path"]) in message


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = client.request(method, "/search", params={"q": "x"})
        assert "method_not_allowed" in response.text
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, HEAD"
        assert "use GET, HEAD" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    ["/", "/?q=consistent+hashing", "/healthz", "/readyz", "/search?q=raft", "/sections", "/articles/1",
     "/metrics", "/docs", "/openapi.json", "/static/style.css", "/docs-assets/swagger-ui.css", "/no/such/route"],
)
def test_head_answers_like_get_without_a_body(live_server: ServerProcess, client: httpx.Client, path: str) -> None:
    """Load balancers and uptime checkers probe with HEAD: same status and type as GET, and no body on the wire."""
    get = client.get(path)
    answer = raw_request(live_server, path.encode(), method=b"HEAD")
    head_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert head_line.split(b" ")[1] == str(get.status_code).encode(), answer[:300]
    assert body == b"", "HEAD must not send a body"
    assert f"content-type: {get.headers['content-type']}".encode() in headers.lower(), headers


def test_raw_bytes_the_protocol_layer_rejects_never_reach_a_500(live_server: ServerProcess) -> None:
    """Raw (unescaped) non-ASCII and >64 KB request lines are refused by uvicorn's parser
    before the app runs: a plain-text 400, outside our control, but never a 5xx."""
    for target in (b"/search?q=caf\xff", b"/search?q=caf\xc3\xa9", b"/search?q=" + b"a" * 70_000):
        answer = raw_request(live_server, target)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_server_logged_no_error(live_server: ServerProcess, client: httpx.Client) -> None:
    client.get("/search", params={"q": "final check"})
    log = live_server.log()
    assert "Traceback" not in log and "ERROR" not in log, log


# -- before anything is built --------------------------------------------------------------------


def test_server_without_index_starts_and_says_to_build(start_server: ServerStarter, tmp_path: Path) -> None:
    with (
        start_server(tmp_path / "empty", wait_ready=False) as server,
        httpx.Client(base_url=server.base_url, timeout=10.0) as http,
    ):
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert "linklens build" in assert_error(ready, 503, "not_ready")
        assert ready.headers["retry-after"] == "1"
        assert "linklens build" in assert_error(http.get("/search", params={"q": "x"}), 503, "not_built")
        assert_error(http.get("/sections"), 503, "not_built")
        page = http.get("/", params={"q": "x"})
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "linklens build" in page.text and '"error"' not in page.text
        assert "linklens_index_loaded 0.0" in http.get("/metrics").text


# -- the runner ----------------------------------------------------------------------------------


def test_runner_with_two_workers_passes_settings_to_every_worker(
    start_server: ServerStarter, built: BuiltIndex, tmp_path: Path
) -> None:
    """Workers are spawned fresh and read settings from the environment the runner sets.

    The test's own LINKLENS_DATA_DIR points at an empty folder; only settings handed
    to `run()` name the built index, so a ready answer from both workers proves
    they came through.
    """

    def runner_command(port: int) -> list[str]:
        code = (
            "from ingest.settings import load_settings; from serve.runner import run; "
            f"run(load_settings(data_dir={str(built.settings.data_dir)!r}), port={port}, workers=2, "
            "log_level='warning')"
        )
        return [sys.executable, "-c", code]

    with start_server(tmp_path / "empty", command=runner_command) as server:
        assert len(psutil.Process(server.process.pid).children()) >= 2, "uvicorn runs the workers as children"
        # Fresh connections are spread over the workers by the kernel; the second may still be loading.
        deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
        ready_in_a_row = 0
        while ready_in_a_row < 10:
            assert time.monotonic() < deadline, server.log()
            with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
                ready = http.get("/readyz")
                if ready.status_code == 200:
                    assert ready.json()["snapshot_id"] == built.report.snapshot_id
                    assert http.get("/search", params={"q": "raft leader"}).status_code == 200
            ready_in_a_row = ready_in_a_row + 1 if ready.status_code == 200 else 0
        assert urlsplit(server.base_url).hostname == "127.0.0.1"
