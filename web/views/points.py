"""``/points``: charge (a job), balance, history."""

from __future__ import annotations

from aiohttp import web

from jobs import points
from web.auth import require_user
from web.commands import DB, GATEWAY
from web.responses import json_response
from web.validation import Int, page_params, read_json

CHARGE = {"amount": Int(1, 1_000_000)}


async def charge(request: web.Request) -> web.Response:
    """``POST /points/charge`` -> job ``points.charge``."""
    user_id = await require_user(request)
    body = await read_json(request, CHARGE)
    return await request.app[GATEWAY].submit(request, user_id, "points.charge", body)


async def balance(request: web.Request) -> web.Response:
    """``GET /points``."""
    user_id = await require_user(request)
    return json_response(await request.app[DB](points.balance, user_id))


async def history(request: web.Request) -> web.Response:
    """``GET /points/history``: movements, newest first."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](points.history, user_id, limit, cursor))
