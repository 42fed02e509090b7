"""One real Ray per test module (2 CPUs, like the machine CI runs on): `pytest_plugins = ["tests.ray_fixtures"]`.

Started in the test process, it is the session every in-process `linklens --engine ray`
command joins (`ray_session` leaves a running Ray alone), and the cluster a driver in another
process joins with `--ray-address ray_address(ray_cluster)`. Like every Ray a test starts, it binds and
talks on 127.0.0.1 only (`cli.engines.ray_runtime.pin_to_loopback`; tests/conftest.py sets Ray's
local-only mode for the whole run besides).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

RAY_TEST_CPUS = 2


def usage_stats_off() -> None:
    """Every Ray a test starts reports nothing to Ray's maintainers (nodes and workers inherit the variable)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def ray_processes_started() -> AbstractContextManager[None]:
    """Start Ray's processes inside this: usage reporting off, no cloud-metadata probe leaves the machine, every
    Ray address is 127.0.0.1 (`cli.engines.ray_runtime.ray_processes_started`)."""
    from cli.engines.ray_runtime import ray_processes_started as started

    usage_stats_off()
    return started()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """The `ray` module, initialised for this test module and shut down after it."""
    import ray  # the extra: `make test` installs it (make install-ray)

    from cli.engines.ray_runtime import LOOPBACK_IP, START_OWN_RAY

    with ray_processes_started():
        ray.init(START_OWN_RAY, num_cpus=RAY_TEST_CPUS, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=False, _node_ip_address=LOOPBACK_IP)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_address(ray: Any) -> str:
    """Where a driver in another process finds this Ray."""
    return str(ray.get_runtime_context().gcs_address)


def ray_sockets() -> list[tuple[str, str, str]]:
    """(process name, local address, remote address) of every TCP/UDP socket of the Ray processes this test
    process started (GCS, raylets, workers, agents: all its descendants); IPv4-mapped IPv6 written as IPv4."""
    import psutil

    def plain(address: Any) -> str:
        return str(address.ip).removeprefix("::ffff:") if address else ""

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            name = process.name()
            found += [(name, plain(c.laddr), plain(c.raddr)) for c in process.net_connections(kind="inet")]
        except psutil.Error:
            continue  # a worker that exited meanwhile
    return found


def assert_on_loopback_only(ray: Any, nodes: int) -> None:
    """Every address the Ray registered (GCS, each node's raylet) and every socket its processes hold is in
    127.0.0.0/8: no wildcard listener, no connection to this machine's other interfaces."""
    import ipaddress

    from cli.engines.ray_runtime import registered_addresses

    loopback = ipaddress.ip_network("127.0.0.0/8")
    addresses = registered_addresses(ray)
    assert len(addresses) == 1 + nodes, addresses
    assert all(ipaddress.ip_address(a) in loopback for a in addresses), addresses
    sockets = ray_sockets()
    listening = [s for s in sockets if not s[2]]
    assert {"gcs_server", "raylet"} <= {s[0] for s in listening}, sockets
    outside = [s for s in sockets if any(a and ipaddress.ip_address(a) not in loopback for a in s[1:])]
    assert not outside, outside
