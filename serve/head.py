"""Answer HEAD wherever GET works, with GET's status and headers and no body.

Why: load balancers and uptime checkers probe with HEAD, and FastAPI routes
declared with `@router.get` answer it with 405. One middleware covers every
route, the page, the docs and the static files alike, instead of a second
method on each route (which would also put a HEAD operation for every path in
the OpenAPI document).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """Pure ASGI middleware: runs a HEAD request as GET and drops the body it sends.

    Content-Length stays as GET computed it, as RFC 9110 allows. The app sees a
    copy of the scope (the server's own scope must keep saying HEAD, so that it
    writes no body either); what routing records in the copy (the matched route)
    is copied back for the middlewares outside, which label metrics by route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(as_get, receive, send_without_body)
        finally:
            scope.update({key: value for key, value in as_get.items() if key != "method"})
