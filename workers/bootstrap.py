"""Start-up of a worker process (or of the embedded all-in-one process)."""

from __future__ import annotations

import gc
import time
from typing import Any

import dramatiq
import redis

from db.connection import connect_database
from db.settings import Settings
from jobs.clock import Clock
from jobs.platform import load_domains
from workers import runtime
from workers.actors import declare_actors
from workers.broker import BrokerEpoch, build_broker
from workers.coupon_gate import CouponGate
from workers.events import Publisher
from workers.heartbeat import Heartbeats
from workers.rankings import BestSellerCache
from workers.sinks import make_sink
from workers.waiting_room import WaitingRoom


def make_waiting_room(client: Any, settings: Settings) -> WaitingRoom:
    """The waiting room with this deployment's limits, on ``client`` (sync or asyncio)."""
    limits = load_domains().settings(settings)["concerts"]
    return WaitingRoom(client, settings.redis_prefix, limits.queue_active_limit,
                       limits.queue_active_ttl, limits.queue_idle_ttl)


def make_runtime(settings: Settings, client: redis.Redis, database, broker,
                 clock: Clock | None = None) -> runtime.Runtime:
    """The services handlers get, on already-open connections."""
    prefix, config = settings.redis_prefix, load_domains().settings(settings)
    return runtime.Runtime(
        settings=settings,
        database=database,
        redis=client,
        broker=broker,
        clock=clock or Clock(),
        publisher=Publisher(client, prefix),
        coupon_gate=CouponGate(client, prefix),
        sink=make_sink(config["system"].data_platform_url),
        waiting_room=make_waiting_room(client, settings),
        best_sellers=BestSellerCache(client, prefix),
        broker_epoch=BrokerEpoch(client, prefix),
        config=config,
    )


def start(settings: Settings, client: redis.Redis, clock: Clock | None = None) -> runtime.Runtime:
    """Connect, build the broker, install the runtime and declare every actor on it.

    The broker carries the heartbeat middleware: a ``dramatiq.Worker`` started on it
    (``dramatiq workers.main``, ``bazaar dev``, the in-process test stack) beats.
    """
    load_domains()
    database = connect_database(settings.database_url, settings.db_pool_size)
    broker = build_broker(settings)
    broker.add_middleware(Heartbeats(client, settings.redis_prefix, settings.heartbeat_interval))
    rt = make_runtime(settings, client, database, broker, clock)
    runtime.install(rt)
    declare_actors(rt.broker)
    return rt


def calm_garbage_collector() -> None:
    """Once start-up is done: move what it allocated out of the collector's sight, and
    collect the young generation less often. A request or a job allocates many
    short-lived objects, and a full collection of a large heap is a pause that every
    request or job in flight waits for (the door's p99 at 64 connections: 34 -> 30 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def start_worker(worker: dramatiq.Worker, timeout: float = 10.0) -> None:
    """Start an in-process Dramatiq ``worker`` and return once all its threads run.

    Each of Dramatiq's threads sets its ``running`` flag only when it begins. A ``stop``
    that came sooner would be undone, and the worker's ``stop`` would then wait ten
    minutes for that thread.
    """
    worker.start()
    threads = [*worker.workers, *worker.consumers.values()]
    deadline = time.monotonic() + timeout
    while not all(thread.running for thread in threads):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker's threads did not start")
        time.sleep(0.001)
