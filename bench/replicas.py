"""Three replicas behind nginx (deploy/nginx.conf) under steady load: what a publish, a kill and shedding cost.

`bench/serve.py --nginx` runs this over a copy of the fixture index; the same
scenario as tests/test_replicas_nginx.py, timed. Reported: client requests and
failures, the retries nginx made (after a 503, after a dead replica), the time from
a build's end to every replica serving its snapshot (against the reload interval),
and the time a restarted replica takes to be ready.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from index.snapshot import current_id
from ingest.settings import load_settings
from ingest.store import Store
from tests.balancer import Load, metric, nginx, replica_command, retried, served_snapshot, until
from tests.serve_fixtures import change_one_article, free_port, run_server

REQUESTS_PER_STEP = 50
SHEDDING, KILLED = 2, 0
RELOAD_INTERVAL_S = 2.0  # the production default, not the tests' 0.2 s
NEW_PARAGRAPH = "Okapi herds graze in the Ituri forest, far from any consistent hashing ring."


def run(fixture_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="linklens-replicas-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        shutil.copytree(fixture_dir, data_dir)
        return _scenario(data_dir, work)


def _scenario(data_dir: Path, work: Path) -> dict[str, Any]:
    ports = [free_port() for _ in range(3)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    logs = work / "logs"
    env = {"LINKLENS_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S)}
    report: dict[str, Any] = {"replicas": 3, "reload_interval_s": RELOAD_INTERVAL_S}
    started = time.perf_counter()
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(run_server(data_dir, logs, port=port, command=replica_command,
                                           env={**env, "LINKLENS_MAX_INFLIGHT": "1"} if n == SHEDDING else env))
            for n, port in enumerate(ports)
        ]  # fmt: skip
        balancer = stack.enter_context(nginx(addresses, free_port(), work / "nginx"))
        with Load(balancer.base_url) as load:
            load.more(REQUESTS_PER_STEP, "at start")
            until(lambda: metric(replicas[SHEDDING].base_url, "linklens_search_shed_total") > 0, "shedding")
            load.more(REQUESTS_PER_STEP, "after shedding")

            after, built_at = _publish(data_dir)
            until(lambda: all(served_snapshot(r.base_url) == after for r in replicas), "the new snapshot")
            report["publish_to_all_replicas_s"] = round(time.perf_counter() - built_at, 3)
            load.more(REQUESTS_PER_STEP, "after the publish")

            os.kill(replicas[KILLED].process.pid, signal.SIGKILL)
            replicas[KILLED].process.wait(timeout=60)
            load.more(REQUESTS_PER_STEP, "with a replica dead")
            restart = time.perf_counter()
            restarted = stack.enter_context(
                run_server(data_dir, logs, port=ports[KILLED], command=replica_command, env=env)
            )
            report["restart_to_ready_s"] = round(time.perf_counter() - restart, 3)
            report["restarted_on_new_snapshot"] = served_snapshot(restarted.base_url) == after
            load.more(REQUESTS_PER_STEP, "after the restart")
        report["shed_by_replica_3"] = metric(replicas[SHEDDING].base_url, "linklens_search_shed_total")
    report.update(
        wall_s=round(time.perf_counter() - started, 1),
        client_requests=load.answered,
        client_failures=len(load.failures),
        client_statuses={str(k): v for k, v in load.statuses.items()},
        retried_after_503=retried(balancer, addresses[SHEDDING], lambda s: s == "503"),
        retried_after_dead_replica=retried(balancer, addresses[KILLED], lambda s: s != "200"),
    )
    report["ok"] = report["client_failures"] == 0 and report["restarted_on_new_snapshot"]
    return report


def _publish(data_dir: Path) -> tuple[str, float]:
    """One article changed, then `linklens index` in its own process, as a build machine runs it."""
    settings = load_settings(data_dir=data_dir)
    with Store.open(settings.store_path) as store:
        change_one_article(store, NEW_PARAGRAPH)
    env = {**os.environ, "LINKLENS_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-c", "from cli.main import main; main()", "index"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    built_at = time.perf_counter()
    published = current_id(settings.snapshots_dir)
    assert published is not None, "the build published no snapshot"
    return published, built_at
