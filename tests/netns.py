"""Tests of refusals run where a broken refusal can reach nothing: a network namespace of their own,
with only loopback up, and a socket guard that records (and fails) any connection outside 127.0.0.0/8.

`in_own_network` re-runs the decorated test in a child pytest under `unshare -n`; the outer test
passes only if the child ran it and it passed there. `loopback_only` is the in-process guard: every
`socket.connect` goes through it; an address outside 127.0.0.0/8 is never connected — it is recorded
and answered "network unreachable" — unless the test maps it (`translate`) onto a loopback server,
which is how a test plays a public host without ever leaving the machine.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

INSIDE_ENV = "LINKLENS_TEST_IN_NETNS"
ROOT = Path(__file__).resolve().parent.parent
# A hang guard for the child pytest, not a timing assertion.
CHILD_BOUND_S = 600


def namespaces_available() -> str | None:
    """None when `unshare -n` works here, else why not."""
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if probe.returncode == 0 else (probe.stderr.strip() or f"exit {probe.returncode}")


def in_own_network(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run `test` inside a network namespace with only loopback (a child pytest under `unshare -n`)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get(INSIDE_ENV) == "1":
            return test(*args, **kwargs)
        why = namespaces_available()
        if why is not None:
            pytest.skip(f"network namespaces are unavailable here ({why}): this refusal test runs only where "
                        "nothing it does can leave the machine")
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        child = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$1"',
             sys.executable, nodeid],
            cwd=ROOT, env={**os.environ, INSIDE_ENV: "1"}, capture_output=True, text=True, timeout=CHILD_BOUND_S)
        assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
        assert "1 passed" in child.stdout, child.stdout[-2000:]

    return wrapper


@dataclass
class LoopbackOnly:
    """What the socket guard saw: connections refused for leaving loopback, and the ones translated."""

    translate: dict[str, str] = field(default_factory=dict)  # address → loopback address it stands for
    outside: list[tuple[str, int]] = field(default_factory=list)
    connected: list[tuple[str, int]] = field(default_factory=list)


def _is_loopback_v4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackOnly]:
    """Every socket connection of the test: to 127.0.0.0/8 (or translated onto it), or never made.

    A generator for a fixture of the test module (`yield from loopback_only(monkeypatch)`)."""
    guard = LoopbackOnly()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def target(address: Any) -> Any:
        if not isinstance(address, tuple):
            return address  # unix sockets (the extraction pool's plumbing)
        host, port = str(address[0]), int(address[1])
        if host in guard.translate:
            guard.connected.append((host, port))
            return (guard.translate[host], port)
        if _is_loopback_v4(host):
            guard.connected.append((host, port))
            return (host, port)
        guard.outside.append((host, port))
        return None

    def connect(sock: socket.socket, address: Any) -> None:
        checked = target(address)
        if checked is None:
            raise OSError(errno.ENETUNREACH, "the test's socket guard: outside 127.0.0.0/8")
        return real_connect(sock, checked)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        checked = target(address)
        if checked is None:
            return errno.ENETUNREACH
        return real_connect_ex(sock, checked)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield guard
