"""A Ray that linklens (or a test) starts asks no cloud metadata endpoint and lives on loopback (issue 16:
nothing leaves unasked); what Ray's driver prints never reaches a command's stdout.

Ray 2.60's dashboard process asks 169.254.169.254 and metadata.google.internal which cloud it runs
on at every start, even with usage reporting off. `ray_processes_started` gives the processes Ray
starts a proxy that is a closed loopback port for that probe; this checks what they inherited, and
that the starting process got its own environment back. The same start pins every Ray address to
127.0.0.1 (the two-node cluster is checked in tests/test_ray_cluster.py).
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from cli.engines.ray_runtime import (
    NO_PROXY_FOR,
    PROBE_SINK_PROXY,
    address_host,
    check_on_loopback,
    on_loopback,
    ray_processes_started,
    ray_session,
)
from ingest.errors import ConfigError
from ingest.settings import load_settings
from tests.ray_fixtures import assert_on_loopback_only

pytest_plugins = ["tests.ray_fixtures"]


def ray_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "ray/dashboard/dashboard.py" in line or "gcs_server" in line or "raylet" in line:
            found.append(process)
    return found


def test_rays_own_processes_send_cloud_probes_nowhere(ray_cluster: Any) -> None:
    started = [p for p in ray_processes() if "dashboard.py" in " ".join(p.cmdline())]
    assert started, "no Ray dashboard process found (it is the one that probes)"
    for process in started:
        environment = process.environ()
        assert environment.get("http_proxy") == PROBE_SINK_PROXY, environment.get("http_proxy")
        assert environment.get("NO_PROXY") == NO_PROXY_FOR
        assert environment.get("RAY_USAGE_STATS_ENABLED") == "0"
    assert os.environ.get("http_proxy") != PROBE_SINK_PROXY, "the test process kept the sink proxy"


def test_the_environment_is_restored_after_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("http_proxy", raising=False)
    with ray_processes_started():
        assert os.environ["HTTPS_PROXY"] == PROBE_SINK_PROXY and os.environ["http_proxy"] == PROBE_SINK_PROXY
    assert os.environ["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert "http_proxy" not in os.environ


def test_the_ray_started_here_registered_and_listens_on_loopback_only(ray_cluster: Any) -> None:
    assert_on_loopback_only(ray_cluster, nodes=1)


def test_a_ray_that_registered_another_address_is_refused_in_one_sentence() -> None:
    nodes = [{"NodeManagerAddress": "127.0.0.1", "Alive": True}, {"NodeManagerAddress": "192.0.2.2", "Alive": True}]
    ray = SimpleNamespace(nodes=lambda: nodes,
                          get_runtime_context=lambda: SimpleNamespace(gcs_address="127.0.0.1:6379"))
    with pytest.raises(ConfigError, match=r"registered 192\.0\.2\.2, not this machine's loopback"):
        check_on_loopback(ray)
    nodes.pop()
    check_on_loopback(ray)


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:6379", True), ("ray://localhost:10001", True), ("[::1]:6379", True), ("127.3.0.1:6379", True),
    ("192.0.2.2:6379", False), ("ray://head:10001", False), ("10.0.0.5:6379", False),
])
def test_a_cluster_address_on_loopback_is_joined_on_loopback(address: str, loopback: bool) -> None:
    assert on_loopback(address_host(address)) is loopback


# What a raylet pushes to every driver under load ("(raylet) WARNING: 12 PYTHON worker processes have been
# started ...") goes the same way: Ray's driver prints it from a background thread.
PUSHED = "linklens-test: a warning every driver prints"
PUSH_DEADLINE_S = 30.0


def test_what_rays_driver_prints_goes_to_stderr_during_a_session(
        ray_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from ray._private.utils import push_error_to_driver
    from ray._private.worker import global_worker

    seen_out = seen_err = ""
    with ray_session(load_settings()):
        push_error_to_driver(global_worker, "linklens_test", PUSHED)  # to every driver (no job named)
        deadline = time.monotonic() + PUSH_DEADLINE_S
        while PUSHED not in seen_err + seen_out and time.monotonic() < deadline:
            captured = capsys.readouterr()
            seen_out, seen_err = seen_out + captured.out, seen_err + captured.err
            time.sleep(0.05)  # polling: the message arrives through the driver's printing thread
    assert PUSHED in seen_err, (seen_out, seen_err)
    assert PUSHED not in seen_out
