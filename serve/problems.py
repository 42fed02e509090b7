"""The one JSON error shape every failing HTTP request gets, and the errors only the server raises.

Shape (pinned by tests/test_serve_errors.py)::

    {"error": {"status": 400, "code": "bad_request", "message": "q must not be empty — ..."}}

Why one shape: clients branch on `status`/`code` and show `message`; a second shape
(FastAPI's 422 `detail` list, Starlette's plain-text 404) would make every client
handle two. Input validation failures are always 400 `bad_request`, never 422: the
server does not distinguish "unparseable" from "well-formed but invalid", and the
OpenAPI document says 400 (see `openapi_doc.py`).
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ingest.errors import (
    BadQueryError,
    LinklensError,
    NotBuiltError,
    SnapshotMismatchError,
)

RETRY_AFTER_S = 1

_CODES_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    414: "uri_too_long",
    500: "internal_error",
    503: "unavailable",
}


class OverloadedError(LinklensError):
    """More searches are running than `max_inflight` allows; the client should retry shortly.

    Shedding at once (instead of queueing) keeps latency bounded for the requests
    that are admitted and tells a load balancer to go elsewhere.
    """

    http_status = 503


class NotFoundError(LinklensError):
    """A path names something (an article) that the loaded snapshot does not hold."""

    http_status = 404


class BadRequestError(LinklensError):
    """The request line itself cannot be read (bad escapes, bad UTF-8, too long)."""

    http_status = 400


# Codes for the errors whose meaning is more specific than their status.
_CODES_BY_ERROR: dict[type[LinklensError], str] = {
    BadQueryError: "bad_request",
    NotBuiltError: "not_built",
    SnapshotMismatchError: "snapshot_mismatch",
    OverloadedError: "overloaded",
    NotFoundError: "not_found",
}


class ErrorDetail(BaseModel):
    """The inside of the error envelope (documented in OpenAPI)."""

    status: int
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """`{"error": {...}}` — the only body a non-2xx JSON response carries."""

    error: ErrorDetail


def code_for(status: int, exc: BaseException | None = None) -> str:
    """The machine-readable code: the error class's if it has one, else the status's."""
    if isinstance(exc, LinklensError):
        for cls in type(exc).__mro__:
            if cls in _CODES_BY_ERROR:
                return _CODES_BY_ERROR[cls]
    if status in _CODES_BY_STATUS:
        return _CODES_BY_STATUS[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(status: int, message: str, code: str | None = None) -> dict[str, dict[str, object]]:
    return {"error": {"status": status, "code": code or code_for(status), "message": message}}


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error response; 503s always carry Retry-After so clients back off, not hammer."""
    all_headers = dict(headers or {})
    if status == 503:
        all_headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse(error_body(status, message, code), status_code=status, headers=all_headers)
