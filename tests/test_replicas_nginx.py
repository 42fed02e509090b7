"""Three `linklens serve` replicas behind nginx configured by deploy/nginx.conf: no request lost.

One data folder, three replicas on loopback (the third sheds at one search in
flight), nginx in front, and a steady stream of distinct searches through it.
While it runs: a replica sheds with 503, a build publishes a new snapshot, and a
replica is killed with SIGKILL and started again. Not one client request may
fail, every replica must end on the new snapshot, and nginx's access log must
show that the retries really happened (a 503 and a dead replica, each answered
by another replica).
"""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from index.build import build_index
from ingest.settings import load_settings
from ingest.store import Store
from tests.balancer import Load, metric, nginx, replica_command, retried, served_snapshot, until

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: built, private_data_dir

DEADLINE_S = 60.0
REQUESTS_PER_STEP = 30  # requests answered between two events, so each happens under traffic
SHEDDING = 2  # the replica started with LINKLENS_MAX_INFLIGHT=1
KILLED = 0
NEW_PARAGRAPH = "Okapi herds graze in the Ituri forest, far from any consistent hashing ring."


def publish_new_snapshot(data_dir: Path, built: BuiltIndex) -> str:
    """A build on the shared folder, as a build machine would run it: one article changed."""
    from tests.serve_fixtures import change_one_article  # loaded as a plugin by now (assertion rewriting)

    settings = load_settings(data_dir=data_dir)
    with Store.open(settings.store_path) as store:
        change_one_article(store, NEW_PARAGRAPH)
        return build_index(settings, store, embedder=built.embedder).snapshot_id


def test_replicas_behind_nginx_lose_no_request_across_shedding_a_publish_and_a_kill(
    built: BuiltIndex, private_data_dir: Path, tmp_path: Path
) -> None:
    from tests.serve_fixtures import free_port, run_server  # loaded as a plugin by now (assertion rewriting)

    ports = [free_port() for _ in range(3)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    logs = tmp_path / "replica-logs"
    before = built.report.snapshot_id
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(run_server(private_data_dir, logs, port=port, command=replica_command,
                                           env={"LINKLENS_MAX_INFLIGHT": "1"} if n == SHEDDING else None))
            for n, port in enumerate(ports)
        ]  # fmt: skip
        assert [served_snapshot(r.base_url) for r in replicas] == [before] * 3
        balancer = stack.enter_context(nginx(addresses, free_port(), tmp_path / "nginx"))
        with Load(balancer.base_url) as load:
            load.more(REQUESTS_PER_STEP, "through nginx at start")

            # 1. One replica sheds: nginx takes its 503 to another replica.
            until(lambda: metric(replicas[SHEDDING].base_url, "linklens_search_shed_total") > 0, "the replica to shed")
            load.more(REQUESTS_PER_STEP, "after shedding")

            # 2. A build publishes a new snapshot: every replica swaps to it while answering.
            after = publish_new_snapshot(private_data_dir, built)
            assert after != before
            until(
                lambda: all(served_snapshot(r.base_url) == after for r in replicas), "every replica on the new snapshot"
            )
            load.more(REQUESTS_PER_STEP, "after the publish")

            # 3. A replica killed outright, then started again: nginx routes around it meanwhile.
            killed = replicas[KILLED].process
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait(timeout=DEADLINE_S)
            load.more(REQUESTS_PER_STEP, "with a replica dead")
            restarted = stack.enter_context(
                run_server(private_data_dir, logs, port=ports[KILLED], command=replica_command)
            )
            assert served_snapshot(restarted.base_url) == after, (
                "a starting replica is ready only on the current snapshot"
            )
            search_ok = {"method": "GET", "route": "/search", "status": "200"}
            until(
                lambda: metric(restarted.base_url, "linklens_http_requests_total", search_ok) > 0,
                "the restarted replica's share",
            )
            load.more(REQUESTS_PER_STEP, "after the restart")

    assert load.failures == [], load.failures[:5]
    assert set(load.statuses) == {200} and load.answered >= 5 * REQUESTS_PER_STEP, load.statuses
    assert retried(balancer, addresses[SHEDDING], lambda s: s == "503") > 0, "a shed request was retried"
    assert retried(balancer, addresses[KILLED], lambda s: s != "200") > 0, "a request to the dead replica was retried"
    answered_503 = {
        a for _, addrs, sts in balancer.access_log() for a, s in zip(addrs, sts, strict=False) if s == "503"
    }
    assert answered_503 == {addresses[SHEDDING]}, "no other replica ever answered 503 (not ready, or shedding)"
