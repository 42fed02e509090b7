"""`/mcp` on `linklens serve` without the MCP SDK on the way to ready.

Importing the SDK (`serve.mcp_server` pulls in `mcp`: its server, client and protocol
types) took ~1 s of the server's ~2.5 s from process start to ready, and a replica is
ready when it can search. So the route is registered at once with a stand-in endpoint, and
the app's lifespan loads the SDK after startup: imported in a worker thread, the tools
built, the SDK's session manager entered and kept open until shutdown. A request to
`/mcp` before that waits for it (up to `LOAD_WAIT_S`), then goes to the SDK's own
endpoint; if the SDK cannot load, `/mcp` answers 503 with the reason and the rest of the
server carries on. With `--workers N` the parent imports the SDK before it forks them
(`preload_sdk`): their readiness pays it once, as before, and they share its pages.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from starlette.routing import Route

from serve.mcp_paths import MCP_PATH
from serve.problems import error_response

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from serve.service import SearchService

logger = logging.getLogger(__name__)

SDK_MODULE = "serve.mcp_server"  # the tools over the SDK; importing it imports the SDK
# A request that arrives while the SDK loads waits this long for it (loading takes ~1 s, more on a busy box).
LOAD_WAIT_S = 30.0
RETRY_AFTER_S = 5  # longer than the search's load-shedding hint: an SDK that failed to load stays failed a while


class DeferredMCP:
    """The ASGI endpoint at `MCP_PATH`: waits for the SDK's endpoint (loaded by `running`), then hands every request
    to it."""

    def __init__(self, service: SearchService) -> None:
        self._service = service
        self._loaded = anyio.Event()
        self._endpoint: ASGIApp | None = None
        self._failure: str | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the app's lifespan: the SDK loads in the background; yields at once, stops it on exit."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._load_and_serve)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def _load_and_serve(self) -> None:
        try:
            module = await anyio.to_thread.run_sync(importlib.import_module, SDK_MODULE)
            endpoint, sessions = module.mcp_endpoint(self._service)
        except Exception as exc:  # noqa: BLE001 - any failure to load leaves /mcp answering 503 with the reason
            logger.exception("the MCP endpoint could not be loaded; /mcp answers 503")
            self._failure = f"{type(exc).__name__}: {exc}"
            self._loaded.set()
            return
        async with sessions:
            self._endpoint = endpoint
            self._loaded.set()
            await anyio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(LOAD_WAIT_S):
            await self._loaded.wait()
        if self._endpoint is None:
            reason = self._failure or f"still loading after {LOAD_WAIT_S:g} s"
            response = error_response(503, f"the MCP endpoint is not available ({reason}); retry, or use /search",
                                      code="mcp_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)})
            await response(scope, receive, send)
            return
        await self._endpoint(scope, receive, send)


def preload_sdk() -> None:
    """For a parent that forks the workers (`serve.prefork`): import the SDK once, before the fork, so the
    workers share its pages and each loads `/mcp` at once instead of paying ~1 s of imports and private memory."""
    importlib.import_module(SDK_MODULE)


def mount_deferred_mcp(app: FastAPI, service: SearchService) -> DeferredMCP:
    """Add `MCP_PATH` to `app` (a route of the app itself, so its middleware sees it like any route); the
    lifespan must enter the returned endpoint's `running()`."""
    endpoint = DeferredMCP(service)
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint))  # methods: the SDK's endpoint answers 405 itself
    return endpoint
