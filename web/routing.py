"""Routes declared as data: path, handler, body schema, response schema, reason codes.

Every domain's web module lists its ``ROUTES``; the app adds them and the OpenAPI
describes them from the same declarations (and from the command registry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from web.schema import decode_body

API = "/api/v1"
Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Query:
    """A documented query parameter."""

    name: str
    type: type = str
    description: str = ""


@dataclass(frozen=True)
class Route:
    """One endpoint. With ``body``, the handler is called as ``handler(request, body)``.

    A command's route (``job_type``) decodes its body itself, after authentication.
    ``auth`` is ``"none"``, ``"user"``, ``"admin"`` or ``"optional"`` (documentation:
    handlers authenticate themselves); ``path`` is under ``/api/v1`` unless it is ``/...``
    with ``root=True``.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    response: Any = None
    status: int = 200
    errors: tuple[str, ...] = ()
    auth: str = "user"
    query: tuple[Query, ...] = ()
    headers: tuple[str, ...] = ()
    content_type: str = "application/json"
    root: bool = False
    decodes: bool = True
    job_type: str | None = None
    door_errors: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The full path."""
        return self.path if self.root else f"{API}{self.path}"

    def view(self) -> Handler:
        """The aiohttp handler: decode the body with its schema first, if there is one."""
        if self.body is None or not self.decodes:
            return self.handler
        schema, handler = self.body, self.handler

        async def with_body(request: web.Request) -> web.StreamResponse:
            return await handler(request, decode_body(await request.read(), schema))

        with_body.__name__ = handler.__name__
        with_body.__doc__ = handler.__doc__
        return with_body


def add_routes(app: web.Application, routes: list[Route]) -> None:
    """Add every route to the app."""
    for route in routes:
        app.router.add_route(route.method, route.url, route.view())
