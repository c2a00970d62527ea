"""``GET /`` (the landing page) and ``GET /api/v1/docs`` (the API reference), for people."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.docs_page import render_landing, render_reference
from web.html_page import CSP
from web.routing import Route

CONSOLE = "/console"


class ApiReference:
    """An app's OpenAPI description, and its reference page rendered on first use."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._html: str | None = None

    def html(self) -> str:
        """The reference page (rendered once: the description never changes while up)."""
        if self._html is None:
            self._html = render_reference(self.spec)
        return self._html


REFERENCE = web.AppKey("api_reference", ApiReference)


def html_response(text: str) -> web.Response:
    """An HTML page that may load nothing from anywhere."""
    return web.Response(text=text, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})


def has_console(app: web.Application) -> bool:
    """True when the operator console is served here, so the landing page may link it."""
    return any(resource.canonical in (CONSOLE, f"{CONSOLE}/")
               for resource in app.router.resources())


async def landing(request: web.Request) -> web.Response:
    """``GET /``: what this is, and links to the docs, the description and health."""
    origin = f"{request.scheme}://{request.host}"
    return html_response(render_landing(request.app[REFERENCE].spec, origin,
                                        has_console(request.app)))


async def api_docs(request: web.Request) -> web.Response:
    """``GET /api/v1/docs``: the OpenAPI description as a page for people."""
    return html_response(request.app[REFERENCE].html())


ROUTES = [
    Route("GET", "/", landing, "The landing page: links to the docs, the OpenAPI and health",
          auth="none", content_type="text/html", root=True),
    Route("GET", "/docs", api_docs, "The API reference, for people (this description as HTML)",
          auth="none", content_type="text/html"),
]
