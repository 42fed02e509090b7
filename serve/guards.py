"""Reject query strings the framework would silently mangle, before any route sees them.

Why: Starlette decodes `%ff` and other invalid UTF-8 to U+FFFD and keeps `%zz`
as literal text, so a broken link would search for garbage and answer 200. A
client that sent bytes we cannot read deserves a 400 that says so; one that sent
a query string longer than any question deserves a 414.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_QUERY_STRING_BYTES = 8 * 1024

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# (scope, status, message) -> a response in the format the path calls for (JSON or the page).
ErrorResponder = Callable[[Scope, int, str], ASGIApp]


def query_string_problem(raw: bytes) -> tuple[int, str] | None:
    """The (status, message) a raw query string earns, or None when it is readable."""
    if len(raw) > MAX_QUERY_STRING_BYTES:
        return 414, (
            f"query string is {len(raw)} bytes; the limit is {MAX_QUERY_STRING_BYTES} — ask a shorter question"
        )
    bad = _BAD_ESCAPE.search(raw)
    if bad is not None:
        fragment = raw[bad.start() : bad.start() + 3].decode("latin-1")
        return 400, f"query string has an invalid percent-escape {fragment!r} — write a literal % as %25"
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError as exc:
        return 400, f"query string is not valid UTF-8 (byte {exc.start}) — percent-encode UTF-8 text"
    return None


class QueryStringGuard:
    """Pure ASGI middleware: checks `scope["query_string"]` and answers the error itself."""

    def __init__(self, app: ASGIApp, respond: ErrorResponder) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = query_string_problem(scope.get("query_string", b""))
            if problem is not None:
                status, message = problem
                response = self.respond(scope, status, message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
