"""Assemble the FastAPI app: one `LiveIndex`, gate, cache and set of metrics per app.

Nothing here is module-level state: `create_app(settings)` builds everything, so
tests can run several apps side by side and `--workers N` gets one set per process
(whose metrics then add up in a shared folder, see `serve/metrics.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ingest.settings import VERSION, Settings, load_settings
from serve.api import router as api_router
from serve.docs_page import install_docs
from serve.gate import ResponseCache, SearchGate
from serve.guards import QueryStringGuard
from serve.handlers import install_error_handlers
from serve.head import HeadAsGet
from serve.live import LiveIndex, SearcherOpener, open_searcher
from serve.mcp_deferred import mount_deferred_mcp
from serve.metrics import MetricsMiddleware, ServerMetrics, multiprocess_dir
from serve.openapi_doc import install_openapi
from serve.page import STATIC_DIR, build_router, make_templates
from serve.service import SearchService

DESCRIPTION = """Semantic search over the articles a curated link list points to.

Every error is `{"error": {"status": <int>, "code": "<str>", "message": "<str>"}}`.
Bad input is always **400** (never 422); 503 carries `Retry-After`.
"""


def create_app(settings: Settings, opener: SearcherOpener = open_searcher) -> FastAPI:
    """The server for `settings`. `opener` exists so plumbing tests can inject a searcher."""
    metrics = ServerMetrics(multiprocess_dir())
    live = LiveIndex(settings, opener, on_serving=metrics.serving, on_refused=metrics.snapshot_refused)
    gate = SearchGate(settings.max_inflight, observer=metrics)
    cache = ResponseCache(settings.query_cache_size, observer=metrics)
    templates = make_templates()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opened once here, not per request; with no index yet the app still starts (readyz says 503).
        try:
            # /mcp's SDK loads once the server is up, and its session manager runs until shutdown
            async with live.kept_current(settings.reload_interval_s), mcp.running():
                yield
        finally:
            gate.close()
            live.close()
            metrics.close()

    # FastAPI's own /docs and /redoc load their assets from CDNs; docs_page.py serves /docs offline.
    app = FastAPI(
        title="linklens", version=VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.service = SearchService(live, gate, cache)
    app.state.metrics = metrics
    app.include_router(api_router)
    mcp = mount_deferred_mcp(app, app.state.service)
    app.include_router(build_router(templates))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    respond_error = install_error_handlers(app, templates)
    install_openapi(app)
    install_docs(app)
    # Added last = outermost: metrics see HEAD as HEAD and also time the guard's 400/414 answers.
    app.add_middleware(HeadAsGet)
    app.add_middleware(QueryStringGuard, respond=respond_error)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (`serve.app:app_from_env`, factory=True): settings from `LINKLENS_*`."""
    return create_app(load_settings())
