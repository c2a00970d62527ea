"""The plain reference of ``bench/feed.py``: a like (or a comment) with nothing around it.

``web``: an aiohttp app whose handlers check the JWT (pyjwt, ``JWT_SECRET``), validate the
path id (and a comment's text) and call a plain Dramatiq actor's ``send``: no job record,
no status, no check that the post exists. ``worker``: that actor under ``dramatiq``
(``WORKER_PROCESSES`` x ``WORKER_THREADS``), doing a like's SQL in one transaction with
psycopg2 (the post's count, which takes its row lock, then the row; rolled back when the
like is already there). Row times are ``clock_timestamp()`` just before the commit, like a
job's ``finished_at``.

Usage: ``PORT=8080 python -m bench.plain_like web`` and ``python -m bench.plain_like worker``
(environment: ``DATABASE_URL``, ``REDIS_URL``, ``PLAIN_NAMESPACE``, ``JWT_SECRET``).
"""

from __future__ import annotations

import os
import sys
import threading

import dramatiq
import jwt
import psycopg2
from aiohttp import web
from dramatiq.brokers.redis import RedisBroker

QUEUE = "plain"
broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["PLAIN_NAMESPACE"])
dramatiq.set_broker(broker)
_local = threading.local()
NOW = "clock_timestamp() AT TIME ZONE 'UTC'"
LIKE = ("UPDATE posts SET like_count = like_count + 1 WHERE id = %s RETURNING id",
        "INSERT INTO post_likes (post_id, user_id, created_at) VALUES (%s, %s, " + NOW + ")"
        " ON CONFLICT (post_id, user_id) DO NOTHING RETURNING id")
COMMENT = ("UPDATE posts SET comment_count = comment_count + 1 WHERE id = %s RETURNING id",
           "INSERT INTO post_comments (post_id, author_id, comment, created_at)"
           " VALUES (%s, %s, %s, " + NOW + ") RETURNING id")


@dramatiq.actor(actor_name="plain.feed", queue_name=QUEUE, max_retries=0)
def apply(post_id: int, user_id: int, comment: str | None = None) -> None:
    """Count, then insert, in one transaction (one connection per worker thread)."""
    conn = getattr(_local, "conn", None) or psycopg2.connect(os.environ["DATABASE_URL"])
    _local.conn = conn
    count, insert = LIKE if comment is None else COMMENT
    try:
        with conn.cursor() as cur:
            cur.execute(count, (post_id,))
            done = cur.fetchone() is not None
            if done:
                text = () if comment is None else (comment,)
                cur.execute(insert, (post_id, user_id, *text))
                done = cur.fetchone() is not None
        if done:
            conn.commit()
        else:
            conn.rollback()
    except Exception:
        conn.rollback()
        raise


def _caller(request: web.Request) -> tuple[int, int]:
    """The token's user and the path's post id (401 / 404 otherwise)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, os.environ["JWT_SECRET"], algorithms=["HS256"],
                            options={"require": ["sub", "exp"]})
    except jwt.InvalidTokenError:
        raise web.HTTPUnauthorized() from None
    raw = request.match_info["post_id"]
    if scheme.lower() != "bearer" or not str(claims["sub"]).isdigit():
        raise web.HTTPUnauthorized()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) >= 1):
        raise web.HTTPNotFound()
    return int(claims["sub"]), int(raw)


async def like(request: web.Request) -> web.Response:
    """``POST /api/v1/posts/{post_id}/likes``."""
    user_id, post_id = _caller(request)
    message = apply.send(post_id, user_id)
    return web.json_response({"id": message.message_id}, status=202)


async def comment(request: web.Request) -> web.Response:
    """``POST /api/v1/posts/{post_id}/comments`` with ``{"comment": "..."}``."""
    user_id, post_id = _caller(request)
    try:
        text = (await request.json())["comment"]
    except (ValueError, TypeError, KeyError):
        raise web.HTTPBadRequest() from None
    if not isinstance(text, str) or not 1 <= len(text) <= 2000 or not text.strip():
        raise web.HTTPBadRequest()
    message = apply.send(post_id, user_id, text)
    return web.json_response({"id": message.message_id}, status=202)


def main() -> None:
    """``web`` or ``worker``."""
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "web":
        app = web.Application()
        app.router.add_post("/api/v1/posts/{post_id}/likes", like)
        app.router.add_post("/api/v1/posts/{post_id}/comments", comment)
        web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None,
                    print=None)
    elif role == "worker":
        os.environ.setdefault("dramatiq_worker_timeout", "100")  # as ``bazaar worker``
        os.execv(sys.executable, [
            sys.executable, "-m", "dramatiq", "bench.plain_like", "--queues", QUEUE,
            "--processes", os.environ.get("WORKER_PROCESSES", "2"),
            "--threads", os.environ.get("WORKER_THREADS", "8")])
    else:
        raise SystemExit("usage: python -m bench.plain_like web|worker")


if __name__ == "__main__":
    main()
