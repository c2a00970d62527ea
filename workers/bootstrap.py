"""Start-up of a worker process (or of the embedded all-in-one process)."""

from __future__ import annotations

import importlib

import redis

from db.connection import connect_database
from db.settings import Settings
from jobs.clock import Clock
from workers import runtime
from workers.broker import build_broker
from workers.coupon_gate import CouponGate
from workers.events import JobEvents
from workers.sinks import make_sink
from workers.waiting_room import WaitingRoom


def make_waiting_room(client, settings: Settings) -> WaitingRoom:
    """The waiting room with this deployment's limits, on ``client`` (sync or asyncio)."""
    return WaitingRoom(client, settings.redis_prefix, settings.queue_active_limit,
                       settings.queue_active_ttl, settings.queue_idle_ttl)


def start(settings: Settings, client: redis.Redis, clock: Clock | None = None) -> runtime.Runtime:
    """Connect, build the broker, install the runtime and declare every actor on it."""
    database = connect_database(settings.database_url, settings.db_pool_size)
    broker = build_broker(settings)
    rt = runtime.Runtime(
        settings=settings,
        database=database,
        redis=client,
        broker=broker,
        clock=clock or Clock(),
        events=JobEvents(client, settings.redis_prefix),
        coupon_gate=CouponGate(client, settings.redis_prefix),
        sink=make_sink(settings.data_platform_url),
        waiting_room=make_waiting_room(client, settings),
    )
    runtime.install(rt)
    importlib.import_module("workers.actors")  # actors bind to the broker just built
    return rt
