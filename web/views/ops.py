"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from aiohttp import web

from web.commands import DB, GATEWAY
from web.metrics import (
    CONTENT_TYPE,
    HTTP_METRICS,
    exposition,
    job_families,
    queue_families,
    worker_families,
)
from web.responses import json_response
from web.views.users import SETTINGS
from workers.broker import queue_view
from workers.events import JobMetrics
from workers.heartbeat import read_workers

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


def fleet_queues(app: web.Application, now: float):
    """The broker's queues as ``GET /admin/queues`` shows them (an awaitable)."""
    return queue_view(app[GATEWAY].broker, app[REDIS], app[SETTINGS], now)


def fleet_workers(app: web.Application, now: float):
    """The worker processes by heartbeat, as ``GET /admin/workers`` shows them."""
    return read_workers(app[REDIS], app[SETTINGS].redis_prefix, now)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: this process's HTTP metrics and the fleet's figures."""
    app, now = request.app, time.time()
    settings = app[SETTINGS]
    figures, queues, workers = await asyncio.gather(
        app[JOB_METRICS].read(), fleet_queues(app, now), fleet_workers(app, now))
    families = [
        *job_families(figures),
        *queue_families(queues, figures.last_finish, now, settings.stall_seconds),
        *worker_families(workers),
    ]
    return web.Response(body=exposition(app[HTTP_METRICS], families),
                        headers={"Content-Type": CONTENT_TYPE,
                                 "X-Content-Type-Options": "nosniff"})
