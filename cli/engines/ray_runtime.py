"""Starting and joining Ray for the `ray` engine, in one place.

The same command runs on a laptop and on a cluster: with no address (neither
`LINKLENS_RAY_ADDRESS`/`--ray-address` nor `RAY_ADDRESS`) Ray starts inside this
process with `LINKLENS_RAY_CPUS` CPUs and stops when the command ends; with one, the
command joins that cluster and leaves it running. Workers import the installed
`linklens` package: locally they share this interpreter's environment; on a cluster
the package must be installed on every node (in the image, or through the
`runtime_env` the README shows).

Nothing leaves the cluster unasked: Ray reports usage statistics to its maintainers unless
`RAY_USAGE_STATS_ENABLED=0`; a Ray started here gets that unless the user set the variable
(a cluster started elsewhere decides for itself: the README says what its operator sets).
Ray's own log lines, progress bars and plan printouts reach the terminal only with -v.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ingest.errors import ConfigError
from ingest.settings import Settings

if TYPE_CHECKING:
    from cli.engines.storage import Datasets

logger = logging.getLogger(__name__)

USAGE_STATS_VARIABLE = "RAY_USAGE_STATS_ENABLED"
TOO_FEW_CPUS = "the Ray cluster offers {cpus:g} CPUs and linklens needs at least {need:g} — add CPUs, set " \
               "LINKLENS_RAY_CPUS to 1 or more, or use --engine local"
MIN_CLUSTER_CPUS = 1.0  # a Ray Data read task takes one whole CPU

ADDRESS_CHECK_TIMEOUT_S = 5.0
RAY_EXTRA_HINT = "the Ray engine needs the optional extra — run: pip install 'linklens[ray]' (or use --engine local)"


def import_ray() -> Any:
    """Ray, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_EXTRA_HINT) from None
    return ray


def cluster_address(settings: Settings) -> str | None:
    """The cluster to join, or None to start Ray in this process."""
    return settings.ray_address or os.environ.get("RAY_ADDRESS") or None


def check_answers(address: str) -> None:
    """A ConfigError at once if nothing listens at `address` (Ray itself retries for minutes before failing)."""
    if address == "auto":
        return  # Ray reads the address of the cluster started on this machine from its own files
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"bad Ray address {address!r} — use host:port, ray://host:10001 or auto "
                          "(--ray-address / LINKLENS_RAY_ADDRESS / RAY_ADDRESS)")
    try:
        socket.create_connection((host, port), timeout=ADDRESS_CHECK_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc.strerror or exc}) — start one, fix "
                          "--ray-address / LINKLENS_RAY_ADDRESS / RAY_ADDRESS, or use --engine local") from None


# Ray 2.60's dashboard process asks the cloud metadata endpoints (169.254.169.254, metadata.google.internal)
# which cloud it runs on at every start, usage reporting on or off (`UsageStatsHead.run` calls
# `get_cluster_config_to_report` before it reads the setting). It asks with `requests`, which honours the
# proxy variables: the processes Ray starts inside `ray_processes_started` get a proxy that is a closed
# loopback port, so that probe fails at once and nothing leaves the machine; addresses on this machine and
# private networks (how Ray's own processes reach each other) bypass it.
PROBE_SINK_PROXY = "http://127.0.0.1:9"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
NO_PROXY_FOR = "localhost,127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,192.0.2.0/24,100.64.0.0/10"


@contextmanager
def ray_processes_started() -> Iterator[None]:
    """Start Ray's processes (`ray.init`, `Cluster`) inside this: usage reporting off unless the user chose,
    and no cloud-metadata probe leaves the machine. The proxy variables are set only while the processes
    start (they keep what they inherited) and restored afterwards, so this process's own clients never see them.
    """
    usage_stats_off()
    saved = {key: os.environ.get(key) for key in PROXY_VARIABLES + NO_PROXY_VARIABLES}
    os.environ.update({key: PROBE_SINK_PROXY for key in PROXY_VARIABLES})
    os.environ.update({key: NO_PROXY_FOR for key in NO_PROXY_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def usage_stats_off() -> None:
    """Ray's usage reporting off for a Ray started by this process (its nodes and workers inherit the
    environment), unless the user chose otherwise."""
    os.environ.setdefault(USAGE_STATS_VARIABLE, "0")


def cluster_cpus(ray: Any) -> float:
    """The CPUs the cluster offers Ray tasks, refused in one sentence when too few for any stage to run."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < MIN_CLUSTER_CPUS:
        raise ConfigError(TOO_FEW_CPUS.format(cpus=cpus, need=MIN_CLUSTER_CPUS))
    return cpus


def alive_nodes(ray: Any) -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


@contextmanager
def ray_session(settings: Settings, datasets: Datasets | None = None) -> Iterator[Any]:
    """Ray, initialised for one command; shut down afterwards only if this command started it.

    Refused at once when the cluster has several nodes and the datasets are in a folder only
    this machine has (`storage.check_reachable`)."""
    from cli.engines.storage import Datasets, check_reachable

    ray = import_ray()
    datasets = datasets or Datasets.open(settings)
    if ray.is_initialized():
        check_reachable(datasets, alive_nodes(ray))
        yield ray
        return
    address = cluster_address(settings)
    verbose = logger.isEnabledFor(logging.INFO)
    usage_stats_off()
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
        "configure_logging": True,
    }
    if address is None and settings.ray_cpus:
        options["num_cpus"] = settings.ray_cpus
    if address is not None:
        check_answers(address)
    try:
        with ray_processes_started():
            # "local": with no address Ray would join any cluster another program started on this machine
            # (it finds one through /tmp/ray/ray_current_cluster), not start this command's own.
            ray.init(address=address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or join Ray at {address or 'this machine'}: {exc} — check "
                          "LINKLENS_RAY_ADDRESS / RAY_ADDRESS, or use --engine local") from None
    try:
        check_reachable(datasets, alive_nodes(ray))
        yield ray
    finally:
        ray.shutdown()


def quiet_ray_data(ray: Any) -> None:
    """Ray Data's own progress bars, plan printouts and log lines only with -v: our bars show each stage."""
    context = ray.data.DataContext.get_current()
    verbose = logger.isEnabledFor(logging.INFO)
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
