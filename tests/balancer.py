"""nginx in front of linklens replicas, as deploy/nginx.conf configures it, for the replica test and bench.

nginx runs as the current user with everything of its own (pid, logs, temp
folders) in one folder, on loopback, in the foreground; the deployed file is
included as it is, with only its `${...}` addresses filled in. Its access log
records every upstream a request tried (`$upstream_addr`, `$upstream_status`), so a
caller can see the retries the balancer made for it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOYED_CONF = REPO_ROOT / "deploy" / "nginx.conf"
NGINX_START_TIMEOUT_S = 30.0
NGINX_STOP_TIMEOUT_S = 10.0
DEADLINE_S = 60.0
CLIENTS = 6
K = 5
# One access-log line: status to the client, then each upstream tried and what it gave.
ACCESS_FORMAT = "$status|$upstream_addr|$upstream_status"

MAIN_CONF = """daemon off;
master_process on;
worker_processes 1;
${user}pid ${folder}/nginx.pid;
error_log ${folder}/error.log warn;
events { worker_connections 512; }
http {
    log_format upstreams '${access_format}';
    access_log ${folder}/access.log upstreams;
    client_body_temp_path ${folder}/client_body;
    proxy_temp_path ${folder}/proxy;
    fastcgi_temp_path ${folder}/fastcgi;
    uwsgi_temp_path ${folder}/uwsgi;
    scgi_temp_path ${folder}/scgi;
    include ${folder}/linklens.conf;
}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("nginx is not installed — run: make test (it installs Debian's nginx package)")
    return found


def replica_command(port: int) -> list[str]:
    """`linklens serve --port PORT`, as an operator starts each replica."""
    return [sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port)]


def render_site(replicas: Sequence[str], listen: str) -> str:
    """deploy/nginx.conf with the replica addresses and the listen address filled in, nothing else changed."""
    values = {f"LINKLENS_REPLICA_{n}": address for n, address in enumerate(replicas, start=1)}
    return Template(DEPLOYED_CONF.read_text(encoding="utf-8")).substitute(values, LINKLENS_LISTEN=listen)


@dataclass
class Balancer:
    base_url: str
    folder: Path
    process: subprocess.Popen[bytes]

    def access_log(self) -> list[tuple[int, list[str], list[str]]]:
        """(status to the client, upstreams tried, their statuses) per request, in order."""
        entries = []
        for line in (self.folder / "access.log").read_text(encoding="utf-8").splitlines():
            status, addresses, statuses = line.split("|")
            entries.append((int(status), addresses.split(", "), statuses.split(", ")))
        return entries

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(encoding="utf-8", errors="replace")


@contextmanager
def nginx(replicas: Sequence[str], port: int, folder: Path) -> Iterator[Balancer]:
    """nginx on 127.0.0.1:`port` in front of `replicas` (host:port each); ready when it answers, always stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "linklens.conf").write_text(render_site(replicas, f"127.0.0.1:{port}"), encoding="utf-8")
    # As root, nginx's workers would switch to `nobody`, who cannot read this folder: keep them the test user.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    main = Template(MAIN_CONF).substitute(user=user, folder=folder, access_format=ACCESS_FORMAT)
    (folder / "nginx.conf").write_text(main, encoding="utf-8")
    command = [nginx_binary(), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration:\n{checked.stderr}")
    with (folder / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT)
    balancer = Balancer(f"http://127.0.0.1:{port}", folder, process)
    try:
        deadline = time.monotonic() + NGINX_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}:\n{balancer.error_log()}")
            try:
                httpx.get(f"{balancer.base_url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx not answering after {NGINX_START_TIMEOUT_S} s") from None
            time.sleep(0.05)
        yield balancer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                process.wait(timeout=NGINX_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- traffic through the balancer, and what the replicas say --------------------------------------


class Load:
    """CLIENTS threads sending distinct searches through the balancer until stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(CLIENTS)]

    def _client(self, client_no: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                q = f"okapi forest ring {client_no} {i}"  # distinct: no response cache hides a replica
                try:
                    response = client.get("/search", params={"q": q, "k": K})
                    ok = response.status_code == 200 and len(response.json()["results"]) == K
                    problem = "" if ok else f"{q}: {response.status_code} {response.text[:200]}"
                    status = response.status_code
                except httpx.HTTPError as exc:
                    problem, status = f"{q}: {exc!r}", -1
                with self._lock:
                    self.statuses[status] += 1
                    if problem:
                        self.failures.append(problem)

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def more(self, count: int, what: str) -> None:
        """Wait until `count` more requests have been answered."""
        target = self.answered + count
        until(lambda: self.answered >= target, f"{count} requests {what}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_S)


def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def metric(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of a replica's /metrics (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(s.value)
    return 0.0


def served_snapshot(base_url: str) -> str | None:
    """The snapshot a replica's /readyz names, None while it is not ready (or not answering)."""
    try:
        response = httpx.get(f"{base_url}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return response.json().get("snapshot_id") if response.status_code == 200 else None


def retried(balancer: Balancer, address: str, failed: Callable[[str], bool]) -> int:
    """Requests answered 200 after the balancer got a failure (`failed(status)`) from `address`."""
    return sum(
        1
        for status, addresses, statuses in balancer.access_log()
        if status == 200 and any(a == address and failed(s) for a, s in zip(addresses, statuses, strict=False))
    )
