"""HostileWeb: servers that lie, below the HTTP library, on raw asyncio sockets.

Each route writes its bytes by hand (status line, headers, body), so it can send what no HTTP
framework would: a gzip header on a plain body, a status line that is not HTTP, a header without
a colon, a body that stops halfway or trickles a byte at a time, nothing at all. It runs on its own
event loop in a background thread (like ``tests.fixtureweb``), on OS-chosen ports of 127.0.1.x,
and closes every connection after one response (``Connection: close``), which keeps the byte
streams exact.

The routes, their hosts and the final state the crawler must reach are in ``routes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .routes import HOSTS, Route, build_routes, list_markdown

FIRST_IP = "127.0.1."
MAX_REQUEST_HEAD_BYTES = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    host: str  # the HOSTS key of the socket it arrived on


# A route's handler writes the whole response itself; it may also never return (stop() cancels it).
Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def _listen(ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 0))
    s.listen(128)
    s.setblocking(False)
    return s


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort with an RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class HostileWeb:
    """Use as ``with HostileWeb() as web:``; ``web.routes`` lists every link with its expected state.

    ``trickle_interval_s`` is the pause between the trickling body's bytes; ``bomb_bytes`` the
    decoded size of the decompression bomb (its compressed size is about a thousandth of it).
    """

    def __init__(self, *, trickle_interval_s: float = 0.1, bomb_bytes: int = 1 << 30) -> None:
        self.trickle_interval_s = trickle_interval_s
        self.bomb_bytes = bomb_bytes
        self.urls: dict[str, str] = {}  # HOSTS key -> http://ip:port
        self.routes: list[Route] = []
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._socks: dict[str, socket.socket] = {}
        self._refused: socket.socket | None = None
        self._lock = threading.Lock()
        self._hits: Counter[tuple[str, str]] = Counter()
        self._headers_seen: list[tuple[str, dict[str, str]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> HostileWeb:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            for i, key in enumerate(HOSTS):
                if key == "refused":  # bound, never listening: connecting is refused
                    self._refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    self._refused.bind((f"{FIRST_IP}{2 + i}", 0))
                    self.urls[key] = "http://{}:{}".format(*self._refused.getsockname())
                else:
                    self._socks[key] = _listen(f"{FIRST_IP}{2 + i}")
                    self.urls[key] = "http://{}:{}".format(*self._socks[key].getsockname())
            self.routes, self._handlers = build_routes(self)
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="hostileweb", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            self.stop()
            raise RuntimeError("HostileWeb failed to start")

    def stop(self) -> None:
        """Cancel every connection (even one that never answers), close the sockets, join the thread."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in [*self._socks.values(), self._refused]:
            if s is not None:
                s.close()
        self._socks, self._refused = {}, None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers = []
        for key, sock in self._socks.items():
            servers.append(await asyncio.start_server(
                lambda r, w, key=key: self._on_connection(r, w, key), sock=sock))  # type: ignore[misc]
        self._ready.set()
        await self._stop.wait()
        for srv in servers:
            srv.close()
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)

    # -- inspection --------------------------------------------------------------------------

    def url(self, host: str, path: str) -> str:
        return self.urls[host] + path

    def hits(self, host: str, path: str) -> int:
        with self._lock:
            return self._hits[(host, path)]

    def request_headers(self, path: str) -> list[dict[str, str]]:
        """The headers of every request received for `path` (lower-cased names), in order."""
        with self._lock:
            return [h for p, h in self._headers_seen if p == path]

    def route(self, name: str) -> Route:
        return next(r for r in self.routes if r.name == name)

    def write_list(self, path: Path) -> Path:
        path.write_text(list_markdown(self), encoding="utf-8")
        return path

    # -- HTTP --------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_HEAD_BYTES:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            path = target.split("?", 1)[0]
            with self._lock:
                self._hits[(host, path)] += 1
                self._headers_seen.append((path, headers))
            handler = self._handlers.get((host, path))
            if handler is None:
                from .routes import not_found
                handler = not_found
            await handler(Request(method, path, headers, host), writer)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:  # only stop() cancels; end quietly
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
