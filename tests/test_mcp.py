"""`linklens mcp` over stdio and `/mcp` on `linklens serve`, driven by the MCP SDK's own client.

The same assertions run over both transports (`check_tools`): an assistant lists the
tools, searches, reads an article, asks for similar ones and for the lists, and every
answer carries URLs to cite, in the order the one search function gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from starlette.testclient import TestClient

from index.search import Searcher
from ingest.settings import load_settings
from serve.app import create_app
from serve.mcp_deferred import RETRY_AFTER_S
from tests.fixtures.relevance import HOSTS, slug_urls
from tests.index_fixtures import MAIN_LIST, PENDING_TITLE, PENDING_URL, PICKS_LIST, BuiltIndex
from tests.serve_fixtures import REPO_ROOT, ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # built, searcher, start_server

URLS = slug_urls()
TOOLS = {"search", "article", "similar", "lists"}
QUESTION = "how to avoid hot shards when one tenant sends far more traffic"
# A session that hangs is a failure, not a stuck suite (starting the model under load takes a while).
SESSION_DEADLINE_S = 180


def mcp_command(port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "cli.main", "mcp"]


def serve_command(port: int) -> list[str]:
    """`linklens serve` as a user starts it (the app factory mounts /mcp whatever the runner)."""
    return [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]


def serve_workers_command(port: int) -> list[str]:
    return [*serve_command(port), "--workers", "2"]


@asynccontextmanager
async def stdio_session(data_dir: Path, log: Path) -> AsyncIterator[ClientSession]:
    """A `linklens mcp` subprocess on `data_dir` and an initialised client session on its stdio."""
    command = mcp_command()
    params = StdioServerParameters(
        command=command[0], args=command[1:], cwd=REPO_ROOT,
        env={**os.environ, "LINKLENS_DATA_DIR": str(data_dir), "LINKLENS_RELOAD_INTERVAL_S": "0.2"},
    )  # fmt: skip
    with anyio.fail_after(SESSION_DEADLINE_S), log.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    with anyio.fail_after(SESSION_DEADLINE_S):
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool's structured answer; fails with the tool's message if it answered with an error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None, result
    return result.structured_content


async def tool_error(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """The message of a tool call that must fail (as a tool error the assistant reads, not a protocol error)."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    return " ".join(getattr(part, "text", "") for part in result.content)


async def check_tools(session: ClientSession, searcher: Searcher) -> None:
    """What an assistant does with linklens, over any transport."""
    listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.description and len(tool.description) > 40, tool
        assert tool.input_schema["type"] == "object", tool
        assert tool.output_schema is not None, tool
    search_args = listed["search"].input_schema
    assert search_args["required"] == ["question"]
    assert {"question", "k", "list", "section", "host"} <= set(search_args["properties"])
    assert (search_args["properties"]["k"]["minimum"], search_args["properties"]["k"]["maximum"]) == (1, 50)
    assert all(p.get("description") for p in search_args["properties"].values()), search_args

    found = await call(session, "search", {"question": QUESTION, "k": 5})
    hits = found["results"]
    assert hits[0]["url"] == URLS["hot-shards-key-salting"]
    expected = searcher.search(QUESTION, k=5).results
    assert [h["url"] for h in hits] == [r.url for r in expected], "the one search function's order"
    assert [h["id"] for h in hits] == [r.article_id for r in expected]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for hit in hits:
        assert hit["url"].startswith("https://") and hit["title"] and hit["passage"] and hit["section"], hit
        assert MAIN_LIST in hit["lists"], hit
    assert "**shard" in hits[0]["passage"].lower() or "**hot**" in hits[0]["passage"].lower(), hits[0]

    picks = await call(session, "search", {"question": QUESTION, "list": PICKS_LIST, "k": 50})
    assert picks["results"] and all(PICKS_LIST in h["lists"] for h in picks["results"]), picks
    assert len(picks["results"]) < 5, "the list filter keeps only the few articles that list cites"
    on_host = await call(session, "search", {"question": QUESTION, "host": HOSTS[1], "section": ["Scalability"]})
    assert on_host["results"], on_host
    assert all(h["host"] == HOSTS[1] and h["section"].startswith("Scalability") for h in on_host["results"]), on_host

    article = await call(session, "article", {"id": hits[0]["id"]})
    assert article["url"] == hits[0]["url"] and article["title"] == hits[0]["title"]
    assert article["passages"] and any("hot" in p["text"].lower() for p in article["passages"]), article
    assert MAIN_LIST in article["lists"] and article["sections"], article

    similar = await call(session, "similar", {"id": hits[0]["id"], "k": 3})
    assert len(similar["results"]) == 3
    assert hits[0]["url"] not in {h["url"] for h in similar["results"]}, "an article is not similar to itself"
    assert [h["url"] for h in similar["results"]] == [r.url for r in searcher.similar(hits[0]["id"], k=3).results]

    lists = await call(session, "lists", {})
    assert {entry["name"] for entry in lists["lists"]} == {MAIN_LIST, PICKS_LIST}
    assert all(entry["articles"] > 0 for entry in lists["lists"]), lists
    assert ["Scalability"] in lists["sections"] and ["Performance"] in lists["sections"], lists


async def test_stdio_answers_with_cited_results(built: BuiltIndex, searcher: Searcher, tmp_path: Path) -> None:
    async with stdio_session(built.settings.data_dir, tmp_path / "mcp.log") as session:
        await check_tools(session, searcher)


async def test_http_on_linklens_serve_answers_with_cited_results(
    built: BuiltIndex, searcher: Searcher, start_server: ServerStarter
) -> None:
    with start_server(built.settings.data_dir, command=serve_command) as server:
        async with http_session(server.base_url + "/mcp") as session:
            await check_tools(session, searcher)
        # The HTTP API's own shape did not change: ids are the MCP tools' addition.
        api = httpx.get(server.base_url + "/search", params={"q": QUESTION, "k": 2}, timeout=30).json()
        assert [r["url"] for r in api["results"]] == [r.url for r in searcher.search(QUESTION, k=2).results]
        assert "id" not in api["results"][0], api


async def test_http_on_forked_workers_answers_from_the_sdk_the_parent_loaded(
    built: BuiltIndex, searcher: Searcher, start_server: ServerStarter
) -> None:
    """`--workers 2`: the parent imports the SDK before forking (`preload_sdk`); each worker serves `/mcp` with it."""
    with start_server(built.settings.data_dir, command=serve_workers_command) as server:
        for _ in range(2):  # stateless: any worker answers any session
            async with http_session(server.base_url + "/mcp") as session:
                await check_tools(session, searcher)


async def test_bad_arguments_are_tool_errors_that_say_what_to_do(built: BuiltIndex, tmp_path: Path) -> None:
    async with stdio_session(built.settings.data_dir, tmp_path / "mcp.log") as session:
        too_many = await tool_error(session, "search", {"question": QUESTION, "k": 99})
        assert "k" in too_many and "50" in too_many, too_many
        assert "question" in await tool_error(session, "search", {"k": 3})
        empty = await tool_error(session, "search", {"question": "   "})
        assert "empty" in empty, empty
        unknown = await tool_error(session, "search", {"question": QUESTION, "section": ["No Such Section"]})
        assert "unknown section" in unknown and "Scalability" in unknown, unknown
        missing = await tool_error(session, "article", {"id": 987654})
        assert "no article 987654" in missing, missing
        assert "no article 987654" in await tool_error(session, "similar", {"id": 987654})
        assert "id" in await tool_error(session, "article", {"id": "first"})
        # The session survives its errors.
        assert (await call(session, "search", {"question": QUESTION, "k": 1}))["results"]


async def test_stranger_text_comes_back_as_data(built: BuiltIndex, tmp_path: Path) -> None:
    """A list title full of markup is returned verbatim as a JSON value, never folded into the tools' text."""
    async with stdio_session(built.settings.data_dir, tmp_path / "mcp.log") as session:
        found = await call(session, "search", {"question": "video transcoding pipeline", "k": 3})
        pending = next(h for h in found["results"] if h["url"] == PENDING_URL)
        assert pending["title"] == PENDING_TITLE
        described = " ".join(t.description or "" for t in (await session.list_tools()).tools)
        assert "<script>" not in described


async def test_without_an_index_the_tools_say_how_to_build_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    async with stdio_session(empty, tmp_path / "mcp.log") as session:
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        message = await tool_error(session, "search", {"question": QUESTION})
        assert "no index" in message and "linklens build" in message, message
        assert "linklens build" in await tool_error(session, "lists", {})


def test_the_server_starts_without_importing_the_mcp_sdk() -> None:
    """The SDK is ~1 s of imports: the app (and the command that serves it) must not pay it before ready."""
    code = "import sys, cli.main, cli.serve_command, serve.app; print(sorted(m for m in sys.modules if m == 'mcp' " \
           "or m.startswith('mcp.') or m == 'serve.mcp_server'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_mcp_sdk_that_cannot_load_leaves_mcp_answering_503_and_the_rest_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "serve.mcp_server", None)  # importing it now raises ModuleNotFoundError
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app) as client:
        answer = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(RETRY_AFTER_S)
        error = answer.json()["error"]
        assert error["code"] == "mcp_unavailable" and "import of serve.mcp_server" in error["message"], error
        assert client.get("/healthz").status_code == 200
