"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from aiohttp import web

from web.commands import DB, GATEWAY
from web.metrics import HTTP_METRICS, job_lines
from web.responses import json_response
from web.views.users import SETTINGS
from workers.broker import queue_stats
from workers.events import JobMetrics

log = logging.getLogger(__name__)
REDIS = web.AppKey("redis", aioredis.Redis)
JOB_METRICS = web.AppKey("job_metrics", JobMetrics)


async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return json_response({"status": "ok"})


def _select_one() -> None:
    from db.connection import database

    database.execute_sql("SELECT 1")


async def readyz(request: web.Request) -> web.Response:
    """The database and Redis answer within 2 s; 503 otherwise."""
    checks = {}
    for name, probe in (
        ("database", request.app[DB](_select_one)),
        ("redis", request.app[REDIS].ping()),
    ):
        try:
            await asyncio.wait_for(probe, 2.0)
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"unavailable: {type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                         200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    settings = request.app[SETTINGS]
    lines = request.app[HTTP_METRICS].render()
    lines += job_lines(*await request.app[JOB_METRICS].read())
    depths, dead = await queue_stats(request.app[GATEWAY].broker, request.app[REDIS],
                                     settings)
    lines += [
        "# HELP bazaar_queue_depth Messages waiting in the broker, by queue.",
        "# TYPE bazaar_queue_depth gauge",
    ]
    lines += [f'bazaar_queue_depth{{queue="{q}"}} {n}' for q, n in depths.items()]
    lines += [
        "# HELP bazaar_dead_letters Messages dead-lettered by the broker, by queue.",
        "# TYPE bazaar_dead_letters gauge",
    ]
    lines += [f'bazaar_dead_letters{{queue="{q}"}} {n}' for q, n in dead.items()]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain",
                        charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})
