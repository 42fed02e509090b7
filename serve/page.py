"""The search page: one server-rendered HTML page over the same service the JSON API uses.

Why server-rendered with no script and no CDN: it must work offline, from a shared
link (`/?q=...&section=...&list=...`), and in any browser. Every failure becomes a sentence
on the page; the page never shows a JSON error or a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.types import Scope

from index.filters import HEADING_JOINER, section_filter
from ingest.errors import BadQueryError, LinklensError, NotBuiltError
from ingest.models import section_label
from serve.problems import OverloadedError
from serve.service import SearchService, parse_k

PAGE_PATH = "/"
TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

_MARKED = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)

BUSY_MESSAGE = "The server is busy right now — please try again in a moment."
BROKEN_MESSAGE = (
    "Something went wrong on our side. Please try again; if it keeps happening, tell whoever runs this server."
)


def highlight(snippet: str | None) -> Markup:
    """`**term**` → `<mark>term</mark>`; everything else HTML-escaped (snippets are untrusted page text)."""
    parts = _MARKED.split(snippet or "")
    html = "".join(f"<mark>{escape(part)}</mark>" if i % 2 else str(escape(part)) for i, part in enumerate(parts))
    return Markup(html)


def safe_href(url: str | None) -> str:
    """Only http(s) links become hrefs: a `javascript:` URL in a list must not run in our page."""
    text = (url or "").strip()
    return text if text.lower().startswith(("http://", "https://")) else "#"


def section_value(path: tuple[str, ...]) -> Markup:
    """A section path as one form value: its headings HTML-escaped, joined by HEADING_JOINER (as `&#31;`).

    A `<select>` sends one value per choice; no heading can hold the joiner, so any heading text,
    " / " included, comes back as exactly this path."""
    return Markup(f"&#{ord(HEADING_JOINER)};".join(str(escape(heading)) for heading in path))


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.filters["highlight"] = highlight
    templates.env.filters["safe_href"] = safe_href
    templates.env.filters["section_value"] = section_value
    templates.env.filters["section_label"] = section_label
    return templates


def friendly_message(exc: LinklensError) -> str:
    """The sentence the page shows for an error; input errors keep their own precise wording."""
    if isinstance(exc, NotBuiltError):
        return "There is no search index yet. Build one with: linklens build — then reload this page."
    if isinstance(exc, OverloadedError):
        return BUSY_MESSAGE
    if isinstance(exc, BadQueryError):
        return f"That search could not be run: {exc}"
    return str(exc)


def render_page(
    templates: Jinja2Templates, scope: Scope, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """Render the page from any scope, including middleware that runs before routing."""
    request = Request(scope)
    full = {
        "q": "",
        "section": (),
        "host": "",
        "list": "",
        "sections": [],
        "lists": [],
        "response": None,
        "message": None,
        "snapshot_id": None,
        "root_path": scope.get("root_path", ""),
        **context,
    }
    return templates.TemplateResponse(request, "search.html", full, status_code=status_code)


def page_error(templates: Jinja2Templates, scope: Scope, status: int, message: str) -> HTMLResponse:
    """The page with only a message: for failures caught outside the page handler."""
    return render_page(templates, scope, {"message": message}, status_code=status)


def build_router(templates: Jinja2Templates) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(PAGE_PATH, response_class=HTMLResponse)
    async def search_page(request: Request) -> HTMLResponse:
        service: SearchService = request.app.state.service
        params = request.query_params
        q = params.get("q", "")
        section = section_filter(params.getlist("section")) or ()  # repeated, or headings joined by HEADING_JOINER
        host = params.get("host", "")
        list_name = params.get("list", "")
        context: dict[str, Any] = {"q": q, "section": section, "host": host, "list": list_name}
        status = 200
        try:
            context["sections"] = service.sections()
            context["lists"] = [(entry["name"], entry["articles"]) for entry in service.lists()]
            context["snapshot_id"] = service.live.snapshot_id
            if "q" in params and not q.strip():
                context["message"] = "Type a question to search the articles."
            elif q.strip():
                context["response"] = await service.search(q, parse_k(params.get("k")), section, host, list_name)
        except LinklensError as exc:
            context["message"] = friendly_message(exc)
            status = exc.http_status
        return render_page(templates, request.scope, context, status_code=status)

    return router
