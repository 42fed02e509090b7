"""ManyHosts: thousands of distinct host names served by one listening socket.

Every address in 127.0.0.0/8 is loopback on Linux, and a socket bound to 0.0.0.0 accepts
connections to any of them, so ``http://127.0.x.y:PORT/`` names up to ~65,000 distinct hosts with one
file descriptor on the server side. The server answers HTTP/1.1 with keep-alive (so a client that
never closes idle connections would keep one per host), and drops any peer that is not loopback.

Besides pages it serves what a crawl shares between hosts: `/to/T/PATH` redirects to PATH on the
redirect target T (127.0.0.10+T, one platform many blogs point to), and `archive_url` is a web
archive (127.0.0.3) with a copy of every page. It counts the requests in flight at each host
address and keeps the most it saw at once (`peak`), each answer held `latency_s` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
ARCHIVE_ADDRESS = "127.0.0.3"
SNAPSHOT_TIMESTAMP = "20200101000000"


def host_address(i: int) -> str:
    """The i-th host: 127.0.1.1, 127.0.1.2, ... 250 per third octet."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def target_address(t: int) -> str:
    """The t-th redirect target: 127.0.0.10, 127.0.0.11, ... (below every listed host)."""
    return f"127.0.0.{10 + t}"


def page(host: str) -> bytes:
    words = f"Notes from loopback host {host}: a small page about queues, retries and back-pressure."
    return (f"<!DOCTYPE html><html><head><title>Host {host}</title></head><body><article><h1>Host {host}</h1>"
            f"<p>{words}</p><p>{words}</p></article></body></html>").encode()


class ManyHosts:
    """Use as ``with ManyHosts() as web:``; ``web.url(i)`` is the page of host i."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.port = 0
        self.requests = 0
        self.latency_s = latency_s
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}  # host address -> most requests it had in flight at once
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def url(self, i: int) -> str:
        return f"http://{host_address(i)}:{self.port}/page"

    def redirecting_url(self, i: int, target: int, path: str) -> str:
        """A URL on host i that redirects to `path` on redirect target `target`."""
        return f"http://{host_address(i)}:{self.port}/to/{target}/{path.lstrip('/')}"

    @property
    def archive_url(self) -> str:
        return f"http://{ARCHIVE_ADDRESS}:{self.port}"

    def _answer(self, host: str, target: bytes) -> tuple[bytes, bytes, bytes]:
        """Status, extra headers and body for a request of `target` made to `host`."""
        path = target.decode("latin-1")
        if path == "/page" or path.startswith("/page/"):  # /page/N: more pages on one host, each its own text
            return b"200 OK", b"", page(host if path == "/page" else host + path)
        if path.startswith("/to/"):
            _, _, number, rest = path.split("/", 3)
            location = f"http://{target_address(int(number))}:{self.port}/{rest}"
            return b"301 Moved Permanently", f"Location: {location}\r\n".encode(), b""
        if host == ARCHIVE_ADDRESS and path.startswith("/wayback/available?"):
            url = parse_qs(urlsplit(path).query).get("url", [""])[0]
            snapshot = f"{self.archive_url}/web/{SNAPSHOT_TIMESTAMP}/{url}"
            closest = {"available": True, "url": snapshot, "timestamp": SNAPSHOT_TIMESTAMP, "status": "200"}
            return b"200 OK", b"", json.dumps({"archived_snapshots": {"closest": closest}}).encode()
        if host == ARCHIVE_ADDRESS and path.startswith(f"/web/{SNAPSHOT_TIMESTAMP}id_/"):
            return b"200 OK", b"", page(path.split("id_/", 1)[1])
        return b"404 Not Found", b"", b"not here"

    def __enter__(self) -> ManyHosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 0))
        sock.listen(1024)
        sock.setblocking(False)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="manyhosts", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("ManyHosts failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._on_connection, sock=self._sock)
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if ipaddress.ip_address(writer.get_extra_info("peername")[0]) not in LOOPBACK:
                return
            host = writer.get_extra_info("sockname")[0]
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                self.in_flight[host] = self.in_flight.get(host, 0) + 1
                self.peak[host] = max(self.peak.get(host, 0), self.in_flight[host])
                try:
                    status, headers, body = self._answer(host, head.split(b" ", 2)[1])
                    if self.latency_s:
                        await asyncio.sleep(self.latency_s)
                    writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n" + headers
                                 + b"Content-Length: " + str(len(body)).encode()
                                 + b"\r\nConnection: keep-alive\r\n\r\n" + body)
                    await writer.drain()
                finally:
                    self.in_flight[host] -= 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
