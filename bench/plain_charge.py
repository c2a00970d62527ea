"""The plain reference of ``bench/charge.py``: a point charge with nothing around it.

``web``: an aiohttp app whose handler checks the JWT (pyjwt HS256, ``JWT_SECRET``, the
claims Bazaar's access tokens carry, so the same tokens work), validates the body
(``{"amount": n}``, an int 1..1,000,000) and calls a plain Dramatiq actor's ``send``: no
job record, no status, no session revocation check; 202 with the message id.
``worker``: that actor under ``dramatiq`` (``WORKER_PROCESSES`` x ``WORKER_THREADS``),
doing ``points.charge``'s SQL in one transaction with psycopg2 (one connection per
thread): the guarded balance UPDATE ... RETURNING, then the history row (``ref`` =
``'plain'``), whose ``created_at`` is ``clock_timestamp()`` just before the commit, like a
job's ``finished_at``.

Usage: ``PORT=8080 python -m bench.plain_charge web`` and ``python -m bench.plain_charge
worker`` (environment: ``DATABASE_URL``, ``REDIS_URL``, ``PLAIN_NAMESPACE``, ``JWT_SECRET``;
``PLAIN_CONSUMER=bazaar`` gives it Bazaar's Redis consumer, ``workers.consumer``, instead
of Dramatiq's: what the plain build would gain from it, for ``bench.drain_cpu``).
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
REF = "plain"
MAX_BALANCE = 10_000_000  # as jobs.points
if os.environ.get("PLAIN_CONSUMER") == "bazaar":
    from workers.consumer import JobBroker

    broker = JobBroker(url=os.environ["REDIS_URL"], namespace=os.environ["PLAIN_NAMESPACE"],
                       deliveries_key=f"{os.environ['PLAIN_NAMESPACE']}:deliveries",
                       counted_queues=())
else:
    broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["PLAIN_NAMESPACE"])
dramatiq.set_broker(broker)
_local = threading.local()
NOW = "clock_timestamp() AT TIME ZONE 'UTC'"
MOVE = ("UPDATE point_wallets SET balance = balance + %s, held = held - 0, updated_at = " + NOW
        + " WHERE user_id = %s AND balance <= %s RETURNING balance")
LOG = ("INSERT INTO point_history (user_id, type, amount, balance_after, ref, created_at)"
       " VALUES (%s, 'CHARGE', %s, %s, %s, " + NOW + ")")


@dramatiq.actor(actor_name="plain.charge", queue_name=QUEUE, max_retries=0)
def charge(user_id: int, amount: int) -> None:
    """Move the balance, then log it, in one transaction; rolled back past the cap."""
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg2.connect(os.environ["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute(MOVE, (amount, user_id, MAX_BALANCE - amount))
            row = cur.fetchone()
            if row is not None:
                cur.execute(LOG, (user_id, amount, row[0], REF))
        if row is None:
            conn.rollback()
        else:
            conn.commit()
    except Exception:
        conn.rollback()
        raise


def _user(request: web.Request) -> int:
    """The access token's user (401 otherwise)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, os.environ["JWT_SECRET"], algorithms=["HS256"],
                            options={"require": ["sub", "sid", "typ", "jti", "exp"]})
    except jwt.InvalidTokenError:
        raise web.HTTPUnauthorized() from None
    sub = claims["sub"]
    if (scheme.lower() != "bearer" or claims["typ"] != "access"
            or not (isinstance(sub, str) and sub.isascii() and sub.isdigit())):
        raise web.HTTPUnauthorized()
    return int(sub)


async def charge_points(request: web.Request) -> web.Response:
    """``POST /api/v1/points/charge`` with ``{"amount": n}``."""
    user_id = _user(request)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest() from None
    amount = body.get("amount") if isinstance(body, dict) and body.keys() == {"amount"} else None
    if type(amount) is not int or not 1 <= amount <= 1_000_000:
        raise web.HTTPBadRequest()
    message = charge.send(user_id, amount)
    return web.json_response({"id": message.message_id}, status=202)


def main() -> None:
    """``web`` or ``worker``."""
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "web":
        app = web.Application()
        app.router.add_post("/api/v1/points/charge", charge_points)
        web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None,
                    print=None)
    elif role == "worker":
        os.environ.setdefault("dramatiq_worker_timeout", "100")  # as ``bazaar worker``
        os.execv(sys.executable, [
            sys.executable, "-m", "dramatiq", "bench.plain_charge", "--queues", QUEUE,
            "--processes", os.environ.get("WORKER_PROCESSES", "2"),
            "--threads", os.environ.get("WORKER_THREADS", "8")])
    else:
        raise SystemExit("usage: python -m bench.plain_charge web|worker")


if __name__ == "__main__":
    main()
