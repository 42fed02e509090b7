"""Make the OpenAPI document tell the truth about errors.

FastAPI documents a 422 `HTTPValidationError` for every route with parameters;
this server answers validation failures with 400 and the one error envelope
instead (see `problems.py`). Clients and schema-driven fuzzers read this document,
so it must say what the server does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

# The routes declare their error responses with `ErrorEnvelope`, so FastAPI emits this schema.
_ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with a cached builder that swaps 422 for the 400 envelope."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for path_item in doc.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault(
                        "400",
                        {
                            "description": "Bad input",
                            "content": {"application/json": {"schema": {"$ref": _ENVELOPE_REF}}},
                        },
                    )
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]
