"""``/points``: balance and history (charging is the ``points.charge`` command)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from jobs import points
from web.auth import require_user
from web.commands import DB
from web.responses import json_response
from web.routing import Route
from web.shapes import Page
from web.validation import PAGING, page_params


class Points(msgspec.Struct):
    """Spendable points, and points held in auction escrow (not spendable)."""

    balance: int
    held: int


class Movement(msgspec.Struct):
    """One change of the balance."""

    id: int
    type: str
    amount: int
    balance_after: int
    ref: str
    created_at: str


async def balance(request: web.Request) -> web.Response:
    """``GET /points``."""
    user_id = await require_user(request)
    return json_response(await request.app[DB](points.balance, user_id))


async def history(request: web.Request) -> web.Response:
    """``GET /points/history``: movements, newest first."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](points.history, user_id, limit, cursor))


ROUTES = [
    Route("GET", "/points", balance, "The caller's balance", response=Points),
    Route("GET", "/points/history", history, "Balance movements, newest first",
          response=Page[Movement], query=PAGING),
]
