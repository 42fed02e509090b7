"""Hot reload under traffic: a rebuild while clients search swaps the snapshot with zero failed requests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from index.build import build_index
from ingest.settings import load_settings
from ingest.store import Store

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex
    from tests.serve_fixtures import ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: live_server, built

CLIENTS = 3
SWAP_TIMEOUT_S = 20.0
TRAFFIC_AFTER_SWAP_S = 0.5
NEW_PARAGRAPH = "Zebra herds migrate across the Serengeti in a loop that mirrors a ring of consistent hashes."


def test_rebuild_under_traffic_swaps_snapshot_without_failing_a_request(
    built: BuiltIndex, private_data_dir: Path, start_server: ServerStarter
) -> None:
    data_dir = private_data_dir
    settings = load_settings(data_dir=data_dir)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    with start_server(data_dir) as server:
        before = httpx.get(f"{server.base_url}/readyz", timeout=5).json()["snapshot_id"]

        def traffic(client_no: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
                i = 0
                while not stop.is_set():
                    i += 1
                    # Distinct queries so the response cache cannot hide a broken index.
                    q = f"zebra migration ring {client_no} {i}"
                    try:
                        response = http.get("/search", params={"q": q, "k": 5})
                    except httpx.HTTPError as exc:
                        failures.append(f"{q}: {exc!r}")
                        continue
                    statuses[response.status_code] += 1
                    if response.status_code != 200 or len(response.json()["results"]) != 5:
                        failures.append(f"{q}: {response.status_code} {response.text[:200]}")

        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            from tests.serve_fixtures import change_one_article  # a plugin by now (assertion rewriting)

            with Store.open(settings.store_path) as store:
                article = change_one_article(store, NEW_PARAGRAPH)
                report = build_index(settings, store, embedder=built.embedder)
            deadline = time.monotonic() + SWAP_TIMEOUT_S
            after = before
            while after != report.snapshot_id and time.monotonic() < deadline:
                time.sleep(0.05)
                after = httpx.get(f"{server.base_url}/readyz", timeout=5).json()["snapshot_id"]
            time.sleep(TRAFFIC_AFTER_SWAP_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

        found = httpx.get(f"{server.base_url}/search", params={"q": "zebra herds serengeti", "k": 5}, timeout=5).json()
        log = server.log()

    assert failures == [], failures[:5]
    assert statuses[200] >= 20, statuses
    assert before != report.snapshot_id == after, "the server must switch to the new snapshot without a restart"
    by_url = {r["url"]: r for r in found["results"]}
    assert article.url in by_url and "**Zebra**" in by_url[article.url]["snippet"], "the new text is searchable"
    assert "Traceback" not in log, log
