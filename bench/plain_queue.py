"""The plain reference of ``bench/queue.py``: the waiting room with nothing around it.

An aiohttp app with the two routes ``bench.queue`` times, each doing the same work as
Bazaar's with the plainest tools: the access token checked with pyjwt on every request
(no per-process cache, no revocation check); ``POST /api/v1/queue/tokens`` validates
``{"concert_id": n}``, signs a queue token with ``jwt.encode`` and runs the waiting
room's join script; ``GET /api/v1/queue/tokens/me`` checks the ``Queue-Token`` with pyjwt
and runs the status script. The scripts are Bazaar's own (``workers.waiting_room``), sent
through a plain ``redis.asyncio`` client (one round trip per request, no batching), under
the key prefix ``PLAIN_PREFIX``; answers with ``web.json_response``. No middleware, no
metrics, no domain errors. (The machine's bare aiohttp rate is ``bench.bare``'s.)

Usage: ``PORT=8080 python -m bench.plain_queue web`` (environment: ``REDIS_URL``,
``PLAIN_PREFIX``, ``JWT_SECRET``, ``QUEUE_ACTIVE_LIMIT``).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import jwt
import redis.asyncio as aioredis
from aiohttp import web

from jobs.clock import utcnow
from workers.waiting_room import WaitingRoom

ROOM = web.AppKey("room", WaitingRoom)


def _claims(token: str, typ: str) -> dict:
    """Verified claims of a ``typ`` token (401 otherwise)."""
    try:
        claims = jwt.decode(token, os.environ["JWT_SECRET"], algorithms=["HS256"],
                            options={"require": ["sub", "sid", "typ", "jti", "exp"]})
    except jwt.InvalidTokenError:
        raise web.HTTPUnauthorized() from None
    sub = claims["sub"]
    if claims["typ"] != typ or not (isinstance(sub, str) and sub.isascii() and sub.isdigit()):
        raise web.HTTPUnauthorized()
    return claims


def _user(request: web.Request) -> int:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise web.HTTPUnauthorized()
    return int(_claims(token, "access")["sub"])


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


async def take_token(request: web.Request) -> web.Response:
    """``POST /api/v1/queue/tokens`` with ``{"concert_id": n}``."""
    user_id = _user(request)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest() from None
    cid = body.get("concert_id") if isinstance(body, dict) else None
    if type(cid) is not int or cid < 1:
        raise web.HTTPBadRequest()
    now = int(time.time())
    token = jwt.encode({"sub": str(user_id), "cid": cid, "sid": uuid.uuid4().hex,
                        "typ": "queue", "jti": uuid.uuid4().hex, "iat": now,
                        "exp": now + 86_400}, os.environ["JWT_SECRET"], algorithm="HS256")
    room = request.app[ROOM]
    place = room.parse_join((await room.joins(cid, [(user_id, token, utcnow())]))[0])
    return web.json_response({"token": place.token, "status": place.status,
                              "position": place.position,
                              "active_until": _iso(place.active_until)},
                             status=201 if place.created else 200)


async def my_place(request: web.Request) -> web.Response:
    """``GET /api/v1/queue/tokens/me`` with a ``Queue-Token``."""
    user_id = _user(request)
    token = request.headers.get("Queue-Token", "")
    claims = _claims(token, "queue")
    if int(claims["sub"]) != user_id or not isinstance(claims.get("cid"), int):
        raise web.HTTPUnauthorized()
    room = request.app[ROOM]
    reads = [(user_id, token, utcnow(), True)]
    place = room.parse_status((await room.statuses(claims["cid"], reads))[0])
    if place.status == "EXPIRED":
        raise web.HTTPGone()
    return web.json_response({"status": place.status, "position": place.position,
                              "estimated_wait_seconds": room.estimated_wait(place),
                              "active_until": _iso(place.active_until)})


def main() -> None:
    """``web``."""
    if sys.argv[1:] != ["web"]:
        raise SystemExit("usage: python -m bench.plain_queue web")
    app = web.Application()
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    app[ROOM] = WaitingRoom(client, os.environ["PLAIN_PREFIX"],
                            int(os.environ.get("QUEUE_ACTIVE_LIMIT", "100")), 600, 3600)
    app.router.add_post("/api/v1/queue/tokens", take_token)
    app.router.add_get("/api/v1/queue/tokens/me", my_place)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None,
                print=None, reuse_port=True)  # (``bench.queue --webs 2`` runs two)


if __name__ == "__main__":
    main()
