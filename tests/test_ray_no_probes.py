"""A Ray that linklens (or a test) starts asks no cloud metadata endpoint (issue 16: nothing leaves unasked).

Ray 2.60's dashboard process asks 169.254.169.254 and metadata.google.internal which cloud it runs
on at every start, even with usage reporting off. `ray_processes_started` gives the processes Ray
starts a proxy that is a closed loopback port for that probe; this checks what they inherited, and
that the starting process got its own environment back.
"""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest

from cli.engines.ray_runtime import NO_PROXY_FOR, PROBE_SINK_PROXY, ray_processes_started

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
