"""Routes declared as data: path, handler, body schema, response schema, reason codes.

Every domain's web module lists its ``ROUTES``; the app adds them and the OpenAPI
describes them from the same declarations (and from the command registry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from jobs.errors import InvalidRequest
from web.auth import require_admin, require_user
from web.schema import decode_body, read_body

API = "/api/v1"
Handler = Callable[..., Awaitable[web.StreamResponse]]
LaneHandler = Callable[..., Awaitable[tuple[int, Any]]]  # (web.fastlane)


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
    lane: LaneHandler | None = None  # the same endpoint answered off the socket (web.fastlane)
    tag: str = ""  # the domain that declares it (set by ``web.app.domain_routes``)

    @property
    def url(self) -> str:
        """The full path."""
        return self.path if self.root else f"{API}{self.path}"

    def view(self) -> Handler:
        """The aiohttp handler: refuse query parameters the route does not declare (as a
        body refuses unknown fields; pages for browsers are lenient), authenticate
        (routes that need a user), then decode the body with its schema, if there is
        one: a caller without credentials learns nothing of the body's rules."""
        known = frozenset(q.name for q in self.query) | (
            {"access_token"} if self.content_type == "text/event-stream" else set())
        strict = self.content_type != "text/html"
        schema, handler = self.body, self.handler
        decodes = schema is not None and self.decodes
        authenticate = {"user": require_user, "admin": require_admin}.get(self.auth)

        async def view(request: web.Request) -> web.StreamResponse:
            if strict and not known.issuperset(request.query):
                raise InvalidRequest({name: "is not a parameter of this endpoint"
                                      for name in request.query if name not in known})
            if not decodes:
                return await handler(request)
            if authenticate is not None:
                await authenticate(request)
            return await handler(request, decode_body(await read_body(request), schema))

        view.__name__ = handler.__name__
        view.__doc__ = handler.__doc__
        return view


def add_routes(app: web.Application, routes: list[Route]) -> None:
    """Add every route to the app."""
    for route in routes:
        app.router.add_route(route.method, route.url, route.view())
