"""In-process tests of the server's plumbing with a fake searcher: faults we must provoke on demand.

Shedding needs searches that block; a 500 needs a searcher that breaks; reload
polling needs an index that appears later. Results and relevance are tested
against the real index in test_serve_contract.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.errors import NotBuiltError, SnapshotMismatchError
from ingest.settings import Settings, load_settings
from serve.app import create_app
from serve.gate import SearchGate
from serve.problems import OverloadedError
from serve.runner import settings_env

ERROR_KEYS = {"status", "code", "message"}


@dataclass
class FakeResponse:
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.payload)


@dataclass
class FakeSearcher:
    """Answers like `index.search.Searcher`, with knobs to block, fail and change snapshot."""

    snapshot_id: str = "fake-1"
    sections_listed: list[tuple[tuple[str, ...], int]] = field(
        default_factory=lambda: [(("Scalability",), 3), (("Caching",), 2)])
    gate: threading.Event | None = None
    fail_with: BaseException | None = None
    calls: int = 0
    next_snapshot: str | None = None
    closed: bool = False

    def search(self, query: str, k: int = 10, section: tuple[str, ...] | None = None, host: str | None = None,
               list_name: str | None = None) -> FakeResponse:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with
        hit = {
            "rank": 1,
            "url": "https://example.com/a",
            "title": "<b>Sharding</b> & friends",
            "section": " › ".join(section or ("Scalability",)),
            "section_path": list(section or ("Scalability",)),
            "lists": [list_name or "awesome-fake"],
            "host": "example.com",
            "score": 0.9,
            "snippet": f"about **{query.split()[0]}** and <script>alert(1)</script>",
            "archived_url": None,
        }
        return FakeResponse({"query": query, "took_ms": 1.0, "results": [hit][:k]})

    def sections(self) -> list[tuple[tuple[str, ...], int]]:
        return list(self.sections_listed)

    def lists(self) -> list[dict[str, Any]]:
        return [{"name": "awesome-fake", "url": "https://example.com/awesome.md", "articles": 5,
                 "states": {"ok": 5}, "crawled_at": None}]

    def article(self, article_id: int) -> dict[str, Any] | None:
        return {"id": article_id, "passages": []} if article_id == 1 else None

    def similar(self, article_id: int, k: int = 10) -> FakeResponse:
        return self.search("similar", k=k)

    def stats(self) -> dict[str, Any]:
        return {"articles": 5, "passages": 21}

    def close(self) -> None:
        self.closed = True

    def reload_if_changed(self) -> bool:
        if self.next_snapshot is None:
            return False
        self.snapshot_id, self.next_snapshot = self.next_snapshot, None
        return True


def opener_for(searcher: FakeSearcher) -> Callable[[Settings], FakeSearcher]:
    return lambda settings: searcher


@asynccontextmanager
async def client_for(settings: Settings, opener: Callable[[Settings], object]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, opener=opener)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


async def test_sheds_load_beyond_max_inflight_with_503_and_retry_after() -> None:
    gate = threading.Event()
    searcher = FakeSearcher(gate=gate)
    settings = load_settings(max_inflight=2, query_cache_size=0)
    async with client_for(settings, opener_for(searcher)) as client:
        blocked = [asyncio.create_task(client.get("/search", params={"q": f"blocked {i}"})) for i in range(2)]
        # Both admitted (running, or waiting for a thread on a 1-core machine).
        while "linklens_search_inflight 2.0" not in (await client.get("/metrics")).text:
            await asyncio.sleep(0.01)
        shed = await client.get("/search", params={"q": "one too many"})
        error = assert_error(shed, 503, "overloaded")
        assert shed.headers["retry-after"] == "1"
        assert "retry" in str(error["message"])
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*blocked)] == [200, 200]
        metrics = (await client.get("/metrics")).text
        assert "linklens_search_shed_total 1.0" in metrics


async def test_a_hung_up_request_keeps_its_slot_until_its_thread_finishes() -> None:
    gate = SearchGate(max_inflight=1, threads=1)
    release = threading.Event()
    request = asyncio.create_task(gate.run(release.wait, 10))
    while gate.inflight == 0:
        await asyncio.sleep(0.01)
    request.cancel()
    await asyncio.sleep(0.05)
    assert gate.inflight == 1, "the thread is still searching: the slot is not free"
    with pytest.raises(OverloadedError):
        await gate.run(lambda: None)
    release.set()
    while gate.inflight:
        await asyncio.sleep(0.01)
    assert await gate.run(lambda: 42) == 42
    gate.close()


async def test_unexpected_exception_is_500_json_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    searcher = FakeSearcher(fail_with=RuntimeError("secret internal detail"))
    async with client_for(load_settings(), opener_for(searcher)) as client:
        response = await client.get("/search", params={"q": "boom"})
        error = assert_error(response, 500, "internal_error")
        assert "secret" not in response.text and "Traceback" not in response.text
        assert "logged" in str(error["message"])
        page = await client.get("/", params={"q": "boom"})
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in page.text and "secret" not in page.text and "Traceback" not in page.text
    assert "RuntimeError" in caplog.text


async def test_cache_answers_repeats_and_is_keyed_by_snapshot() -> None:
    searcher = FakeSearcher()
    async with client_for(load_settings(query_cache_size=4), opener_for(searcher)) as client:
        first = (await client.get("/search", params={"q": "sharding  keys"})).json()
        again = (await client.get("/search", params={"q": "  sharding keys "})).json()
        assert searcher.calls == 1
        assert again["results"] == first["results"] and again["query"] == first["query"] == "sharding keys"
        searcher.snapshot_id = "fake-2"
        await client.get("/search", params={"q": "sharding keys"})
        assert searcher.calls == 2, "a new snapshot must not be answered from the old snapshot's cache"
        await client.get("/search", params={"q": "sharding keys", "k": 3})
        assert searcher.calls == 3, "k is part of the key"


async def test_cache_is_bounded_lru() -> None:
    searcher = FakeSearcher()
    async with client_for(load_settings(query_cache_size=2), opener_for(searcher)) as client:
        for q in ["a", "b", "a", "c", "a", "b"]:
            await client.get("/search", params={"q": q})
    # a, b miss; a hit; c miss (evicts b); a hit; b miss again.
    assert searcher.calls == 4


async def test_without_index_app_starts_unready_then_picks_index_up() -> None:
    searcher = FakeSearcher()
    built = threading.Event()

    def opener(settings: Settings) -> FakeSearcher:
        if not built.is_set():
            raise NotBuiltError(f"no index in {settings.data_dir} yet — run: linklens build")
        return searcher

    async with client_for(load_settings(reload_interval_s=0.05), opener) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert_error(ready, 503, "not_ready")
        assert ready.headers["retry-after"] == "1"
        error = assert_error(await client.get("/search", params={"q": "x"}), 503, "not_built")
        assert "linklens build" in str(error["message"])
        page = await client.get("/", params={"q": "x"})
        assert page.status_code == 503 and "linklens build" in page.text and "{" not in page.text.split("<body")[1]
        built.set()
        for _ in range(100):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert (await client.get("/readyz")).json() == {"status": "ready", "snapshot_id": "fake-1"}
        assert (await client.get("/search", params={"q": "x"})).status_code == 200


async def test_poller_swaps_snapshot_survives_a_mismatch_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    class Mismatching(FakeSearcher):
        mismatch: bool = True

        def reload_if_changed(self) -> bool:
            if self.mismatch:
                raise SnapshotMismatchError("snapshot built with another model — rebuild it")
            return super().reload_if_changed()

    searcher = Mismatching()
    async with client_for(load_settings(reload_interval_s=0.02), opener_for(searcher)) as client:
        await asyncio.sleep(0.3)
        assert (await client.get("/readyz")).json()["snapshot_id"] == "fake-1", "stays on the old snapshot"
        warnings = [r for r in caplog.records if "staying on snapshot" in r.getMessage()]
        assert len(warnings) == 1, "a lasting problem is logged once, not once per poll"
        searcher.mismatch, searcher.next_snapshot = False, "fake-2"
        for _ in range(100):
            body = (await client.get("/readyz")).json()
            if body.get("snapshot_id") == "fake-2":
                break
            await asyncio.sleep(0.02)
        assert body == {"status": "ready", "snapshot_id": "fake-2"}
        assert 'snapshot_id="fake-2"' in (await client.get("/metrics")).text
    assert searcher.closed, "shutdown releases the snapshot's files"


async def test_each_app_has_its_own_metrics_registry() -> None:
    async with (
        client_for(load_settings(), opener_for(FakeSearcher())) as one,
        client_for(load_settings(), opener_for(FakeSearcher())) as two,
    ):
        for _ in range(3):
            await one.get("/healthz")
        await two.get("/healthz")
        line = 'linklens_http_requests_total{method="GET",route="/healthz",status="200"}'
        assert f"{line} 3.0" in (await one.get("/metrics")).text
        assert f"{line} 1.0" in (await two.get("/metrics")).text


async def test_metrics_label_routes_by_template_not_raw_path() -> None:
    async with client_for(load_settings(), opener_for(FakeSearcher())) as client:
        for path in ("/articles/1", "/articles/2", "/static/style.css", "/static/nope.css", "/docs", "/x/y"):
            await client.get(path)
        text = (await client.get("/metrics")).text
    assert 'route="/articles/{article_id}",status="200"} 1.0' in text
    assert 'route="/articles/{article_id}",status="404"} 1.0' in text
    assert 'route="/static",status="200"' in text and 'route="/static",status="404"' in text
    assert 'route="/docs",status="200"' in text and 'route="<unmatched>",status="404"' in text
    assert "/x/y" not in text and "/articles/2" not in text


async def test_openapi_documents_400_envelope_not_422() -> None:
    async with client_for(load_settings(), opener_for(FakeSearcher())) as client:
        doc = (await client.get("/openapi.json")).json()
    search = doc["paths"]["/search"]["get"]["responses"]
    assert "422" not in search and search["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorEnvelope"
    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert {"/search", "/articles/{article_id}", "/articles/{article_id}/similar", "/sections"} <= set(doc["paths"])


def test_settings_survive_the_trip_through_worker_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(max_inflight=7, query_cache_size=3, reload_interval_s=0.5, port=8123)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    assert load_settings() == settings
