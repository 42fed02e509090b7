"""One real Ray per test module (2 CPUs, like the machine CI runs on): `pytest_plugins = ["tests.ray_fixtures"]`.

Started in the test process, it is the session every in-process `linklens --engine ray`
command joins (`ray_session` leaves a running Ray alone), and the cluster a driver in another
process joins with `--ray-address ray_address(ray_cluster)`.
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
    """Start Ray's processes inside this: usage reporting off, and no cloud-metadata probe leaves the machine
    (`cli.engines.ray_runtime.ray_processes_started`)."""
    from cli.engines.ray_runtime import ray_processes_started as started

    usage_stats_off()
    return started()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """The `ray` module, initialised for this test module and shut down after it."""
    import ray  # the extra: `make test` installs it (make install-ray)

    with ray_processes_started():
        # "local": a new Ray even when another program's cluster runs on this machine (Ray would join it)
        ray.init(address="local", num_cpus=RAY_TEST_CPUS, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_address(ray: Any) -> str:
    """Where a driver in another process finds this Ray."""
    return str(ray.get_runtime_context().gcs_address)
