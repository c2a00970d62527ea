"""What actors need at run time, created once at process start-up and passed in here."""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
import peewee
import redis

from db.settings import Settings
from jobs.clock import Clock
from workers.coupon_gate import CouponGate
from workers.events import JobEvents
from workers.sinks import Sink
from workers.waiting_room import WaitingRoom


@dataclass
class Runtime:
    """The process's settings, connections, broker, clock, and what the actors use."""

    settings: Settings
    database: peewee.Database
    redis: redis.Redis
    broker: dramatiq.Broker
    clock: Clock
    events: JobEvents
    coupon_gate: CouponGate
    sink: Sink
    waiting_room: WaitingRoom | None = None


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
