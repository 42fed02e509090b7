"""`/docs`: Swagger UI for the API, served from this server, never from a CDN.

Why: the offline promise covers every page linklens serves. FastAPI's built-in
/docs and /redoc pull Swagger UI, ReDoc and a favicon from public CDNs, so they
are switched off (`docs_url=None, redoc_url=None` in `app.py`) and this page
serves the assets that the `fastapi-offline` package ships inside its wheel.
Only the assets are used, not its `FastAPIOffline` app class.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
DOCS_ASSETS_PATH = "/docs-assets"
# Swagger UI's default validatorUrl sends the document to a public validator for a badge; offline means no.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "defaultModelsExpandDepth": 0}


def docs_assets_dir() -> Path:
    """The folder of Swagger UI files inside the installed `fastapi_offline` package."""
    spec = find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package is missing — reinstall linklens (pip install -e .)")
    return Path(spec.origin).parent / "static"


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI assets and add the `/docs` page (not itself part of the OpenAPI document)."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=docs_assets_dir()), name="docs-assets")
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH, response_class=HTMLResponse)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — API",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    app.include_router(router)
