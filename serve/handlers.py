"""Every way a request can fail, turned into the one error shape (or the page's sentence).

Why all here: one place decides status, code and wording, so a new failure mode
cannot leak FastAPI's `detail` lists, Starlette's plain-text 404 or a traceback.
Requests for the search page get HTML instead of JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from ingest.errors import LinklensError
from serve.guards import ErrorResponder
from serve.page import BROKEN_MESSAGE, PAGE_PATH, friendly_message, page_error
from serve.problems import code_for, error_response

logger = logging.getLogger(__name__)

MAX_ECHOED_INPUT_CHARS = 40


def install_error_handlers(app: FastAPI, templates: Jinja2Templates) -> ErrorResponder:
    """Register the handlers on `app`; returns `respond`, which the query-string guard also uses."""

    def respond(
        scope: Scope, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        if scope.get("path") == PAGE_PATH:
            return page_error(templates, scope, status, message)
        return error_response(status, message, code=code, headers=headers)

    async def on_linklens_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LinklensError)
        message = friendly_message(exc) if request.url.path == PAGE_PATH else str(exc)
        return respond(request.scope, exc.http_status, message, code=code_for(exc.http_status, exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if "Allow" in headers:
            headers["Allow"] = with_head(headers["Allow"])
        return respond(request.scope, exc.status_code, http_error_message(request, exc), headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(request.scope, 400, validation_message(exc.errors()))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this handler, so uvicorn logs the traceback; the client never sees it.
        logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        message = BROKEN_MESSAGE if request.url.path == PAGE_PATH else "internal error — the server logged the details"
        return respond(request.scope, 500, message)

    app.add_exception_handler(LinklensError, on_linklens_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
    return respond


def http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404 and exc.detail in (None, "Not Found"):
        return f"no such page {request.url.path[:200]!r} — the API is listed at /docs"
    if exc.status_code == 405:
        allowed = with_head((exc.headers or {}).get("Allow", "GET"))
        return f"method {request.method} is not allowed on {request.url.path[:200]!r}; use {allowed}"
    return str(exc.detail)


def with_head(allow: str) -> str:
    """`Allow` as the client sees it: HeadAsGet answers HEAD wherever GET is allowed."""
    methods = [m.strip() for m in allow.split(",") if m.strip()]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)


def validation_message(errors: Any) -> str:
    """FastAPI's error list as one sentence: `k: input should be ... (got '99')`."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
        name = ".".join(loc) or "request"
        msg = str(err.get("msg", "invalid value"))
        msg = msg[:1].lower() + msg[1:]
        got = err.get("input")
        echoed = f" (got {str(got)[:MAX_ECHOED_INPUT_CHARS]!r})" if isinstance(got, str | int | float) else ""
        parts.append(f"{name}: {msg}{echoed}")
    return "; ".join(parts) or "the request is not valid"
