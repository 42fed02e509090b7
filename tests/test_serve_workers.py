"""`linklens serve --workers 2` end to end: metrics add up across workers, every worker swaps snapshots.

One real server (the runner: two workers forked by gunicorn from a loaded parent) over a private copy of
the fixture index, with its metrics folder in tmp_path so the test can see it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from index.build import build_index
from ingest.settings import load_settings
from ingest.store import Store

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex
    from tests.serve_fixtures import ServerProcess, ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: built

WORKERS = 2
CLIENTS = 3
DEADLINE_S = 60.0
STALE_COUNT = 1000.0
SEARCH_SERIES = {"method": "GET", "route": "/search", "status": "200"}
NEW_PARAGRAPH = "Okapi herds graze in the Ituri forest, far from any consistent hashing ring."


def runner_command(port: int) -> list[str]:
    """`serve.runner.run` with two workers, as `linklens serve --workers 2` calls it."""
    code = (
        "from ingest.settings import load_settings; from serve.runner import run; "
        f"run(load_settings(), port={port}, workers={WORKERS}, log_level='warning')"
    )
    return [sys.executable, "-c", code]


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in a Prometheus exposition, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return float(s.value)
    return None


def scrape(server: ServerProcess) -> str:
    # A fresh connection per scrape: the kernel may hand it to either worker.
    return httpx.get(f"{server.base_url}/metrics", timeout=10).text


def wait_for(server: ServerProcess, what: str, check: object) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        text = scrape(server)
        if check(text):  # type: ignore[operator]
            return text
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{server.log()}")


def searches_per_worker(folder: Path) -> dict[int, float]:
    """Successful /search requests counted in each worker's own file (pid -> count)."""
    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in metric.samples:
                if s.name == "linklens_http_requests_total" and s.labels == SEARCH_SERIES:
                    counts[pid] = counts.get(pid, 0.0) + s.value
    return counts


def leave_stale_counts(folder: Path) -> None:
    """What a previous run would have left in the folder: 1000 searches that this run must not count."""
    code = (
        "from prometheus_client import Counter; "
        "Counter('linklens_http_requests', 'stale', ['method', 'route', 'status'])"
        f".labels('GET', '/search', '200').inc({STALE_COUNT})"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(folder.glob("counter_*.db")), "the stale file exists before the run"


def test_two_workers_add_up_metrics_and_all_swap_to_a_new_snapshot(
    built: BuiltIndex, private_data_dir: Path, start_server: ServerStarter, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    leave_stale_counts(metrics_dir)
    settings = load_settings(data_dir=private_data_dir)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    sent = [0] * CLIENTS

    with start_server(
        private_data_dir, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, command=runner_command
    ) as server:
        wait_for(server, "both workers ready", lambda t: sample(t, "linklens_workers") == WORKERS
                 and sample(t, "linklens_index_loaded") == 1.0)  # fmt: skip
        before = built.report.snapshot_id
        text = scrape(server)
        assert sample(text, "linklens_index_snapshot_workers", {"snapshot_id": before}) == WORKERS
        assert sample(text, "linklens_http_requests_total", SEARCH_SERIES) is None, "the stale run was wiped"

        def traffic(client_no: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                q = f"okapi forest ring {client_no} {i}"  # distinct: the cache cannot hide a broken index
                try:
                    # A new connection per request, so both workers take a share.
                    response = httpx.get(f"{server.base_url}/search", params={"q": q, "k": 5}, timeout=10)
                except httpx.HTTPError as exc:
                    failures.append(f"{q}: {exc!r}")
                    continue
                sent[client_no] += 1
                statuses[response.status_code] += 1
                if response.status_code != 200 or len(response.json()["results"]) != 5:
                    failures.append(f"{q}: {response.status_code} {response.text[:200]}")

        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + DEADLINE_S
            while len([c for c in searches_per_worker(metrics_dir).values() if c > 0]) < WORKERS:
                assert time.monotonic() < deadline, f"one worker took every request: {searches_per_worker(metrics_dir)}"
                time.sleep(0.1)
            from tests.serve_fixtures import change_one_article  # a plugin by now (assertion rewriting)

            with Store.open(settings.store_path) as store:
                change_one_article(store, NEW_PARAGRAPH)
                report = build_index(settings, store, embedder=built.embedder)
            after = report.snapshot_id
            swapped = wait_for(
                server, "every worker on the new snapshot",
                lambda t: sample(t, "linklens_index_snapshot_workers", {"snapshot_id": after}) == WORKERS,
            )  # fmt: skip
            time.sleep(0.5)  # traffic goes on after the swap
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

        assert failures == [], failures[:5]
        # a snapshot no worker serves any more leaves the exposition (no label value per build, forever)
        assert sample(swapped, "linklens_index_snapshot_workers", {"snapshot_id": before}) is None
        assert sample(swapped, "linklens_index_snapshot_info", {"snapshot_id": before}) is None
        assert sample(swapped, "linklens_index_snapshot_info", {"snapshot_id": after}) == 1.0
        ready = {httpx.get(f"{server.base_url}/readyz", timeout=10).json()["snapshot_id"] for _ in range(20)}
        assert ready == {after}

        # Every scrape, whichever worker answers it, counts every worker's searches, and only this run's.
        per_worker = searches_per_worker(metrics_dir)
        total = sum(per_worker.values())
        assert len(per_worker) == WORKERS and min(per_worker.values()) > 0, per_worker
        assert total == sum(sent) == statuses[200], (per_worker, sent)
        for _ in range(6):
            assert sample(scrape(server), "linklens_http_requests_total", SEARCH_SERIES) == total
        assert sample(scrape(server), "linklens_search_inflight") == 0.0

        # Workers are forks of the loaded parent (same command line), not fresh interpreters.
        parent = psutil.Process(server.process.pid)
        workers = parent.children()
        assert len(workers) == WORKERS and all(w.cmdline() == parent.cmdline() for w in workers)
        # A worker killed outright is replaced by gunicorn's arbiter; its gauges must not count on.
        victim = next(p for p in workers if p.pid in per_worker)
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(server, "a replacement worker, the dead one forgotten",
                 lambda t: sample(t, "linklens_workers") == WORKERS and sample(t, "linklens_index_loaded") == 1.0
                 and not list(metrics_dir.glob(f"gauge_live*_{victim.pid}.db")))  # fmt: skip
        text = scrape(server)
        assert sample(text, "linklens_index_snapshot_workers", {"snapshot_id": after}) == WORKERS
        assert sample(text, "linklens_http_requests_total", SEARCH_SERIES) == total, "counters of the dead stay"
        log = server.log()

    assert not list(metrics_dir.glob("gauge_live*.db")), "workers that stop drop their live gauges"
    assert "Traceback" not in log, log
