"""ManyHosts: thousands of distinct host names served by one listening socket.

Every address in 127.0.0.0/8 is loopback on Linux, and a socket bound to 0.0.0.0 accepts
connections to any of them, so ``http://127.0.x.y:PORT/`` names up to ~65,000 distinct hosts with one
file descriptor on the server side. The server answers HTTP/1.1 with keep-alive (so a client that
never closes idle connections would keep one per host), and drops any peer that is not loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from typing import Any

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def host_address(i: int) -> str:
    """The i-th host: 127.0.1.1, 127.0.1.2, ... 250 per third octet."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def page(host: str) -> bytes:
    words = f"Notes from loopback host {host}: a small page about queues, retries and back-pressure."
    return (f"<!DOCTYPE html><html><head><title>Host {host}</title></head><body><article><h1>Host {host}</h1>"
            f"<p>{words}</p><p>{words}</p></article></body></html>").encode()


class ManyHosts:
    """Use as ``with ManyHosts() as web:``; ``web.url(i)`` is the page of host i."""

    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def url(self, i: int) -> str:
        return f"http://{host_address(i)}:{self.port}/page"

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
                path = head.split(b" ", 2)[1]
                if path == b"/page" or path.startswith(b"/page/"):  # /page/N: more pages on one host
                    status, body = b"200 OK", page(host)
                else:
                    status, body = b"404 Not Found", b"not here"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n"
                             + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
