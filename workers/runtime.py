"""What handlers and actors need at run time, created once at process start-up.

The runtime is the ``services`` of every handler's context: settings, the clock, and
one adapter per piece of Redis-kept domain state. Handlers reach Redis only through
these adapters, and only from reactions or gates, never inside a transaction.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import dramatiq
import peewee
import redis

from db.connection import kept_connection
from db.settings import Settings
from jobs.clock import Clock
from workers.broker import BrokerEpoch, Sendable, send_jobs
from workers.coupon_gate import CouponGate
from workers.events import Publisher
from workers.rankings import BestSellerCache
from workers.sinks import Sink
from workers.waiting_room import WaitingRoom


@dataclass
class Runtime:
    """The process's settings, connections, broker, clock, and domain adapters."""

    settings: Settings
    database: peewee.Database
    redis: redis.Redis
    broker: dramatiq.Broker
    clock: Clock
    publisher: Publisher
    coupon_gate: CouponGate
    sink: Sink
    waiting_room: WaitingRoom
    best_sellers: BestSellerCache
    broker_epoch: BrokerEpoch
    config: dict[str, Any]  # each domain's settings, by domain name
    # A worker process's threads keep their database connections from one job to the
    # next (its pool serves only them); where web threads share the pool (the embedded
    # process, the in-process test stack), each unit of work checks one out and back.
    keep_connections: bool = False

    def connection(self) -> AbstractContextManager:
        """The connection a unit of work (a job, a reaction, a periodic run) runs on."""
        if self.keep_connections:
            return kept_connection(self.database)
        return self.database.connection_context()

    def send_jobs(self, jobs: list[Sendable]) -> None:
        """Enqueue the messages of recorded jobs."""
        send_jobs(self.broker, jobs)


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one actors use."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    """The installed runtime; actors fail loudly if start-up forgot it."""
    if _runtime is None:
        raise RuntimeError("workers.runtime.install() was not called at start-up")
    return _runtime
