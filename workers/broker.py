"""Broker set-up and sending a recorded job as a Dramatiq message."""

from __future__ import annotations

import uuid

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from db.settings import Settings

COMMANDS_QUEUE = "commands"
SWEEPS_QUEUE = "sweeps"
QUEUES = (COMMANDS_QUEUE, SWEEPS_QUEUE)


def dramatiq_namespace(settings: Settings) -> str:
    """The Redis key prefix of the broker's queues."""
    return f"{settings.redis_prefix}:dramatiq"


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A Redis broker (or the in-process stub when embedded), made the global broker.

    The heartbeat timeout and maintenance chance are set so that the messages of a
    killed worker come back within seconds, not the library default's many minutes.
    """
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=120_000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=settings.job_max_retries, min_backoff=200, max_backoff=5_000),
        CurrentMessage(),
    ]
    if settings.embedded:
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
    else:
        broker = RedisBroker(
            url=settings.redis_url,
            namespace=dramatiq_namespace(settings),
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
            middleware=middleware,
        )
    for queue in QUEUES:
        broker.declare_queue(queue)
    dramatiq.set_broker(broker)
    return broker


def send_job(broker: dramatiq.Broker, job_id: uuid.UUID | str, job_type: str) -> None:
    """Enqueue the message for a recorded job; its message id is the job id."""
    broker.enqueue(
        dramatiq.Message(
            queue_name=COMMANDS_QUEUE,
            actor_name=job_type,
            args=(str(job_id),),
            kwargs={},
            options={},
            message_id=str(job_id),
        )
    )


def send_periodic(broker: dramatiq.Broker, schedule_id: str, slot: int) -> None:
    """Enqueue one run of a periodic task; ``(schedule_id, slot)`` runs at most once."""
    broker.enqueue(
        dramatiq.Message(
            queue_name=SWEEPS_QUEUE,
            actor_name="periodic",
            args=(schedule_id, slot),
            kwargs={},
            options={},
            message_id=f"{schedule_id}:{slot}",
        )
    )


def queue_depth_keys(settings: Settings) -> dict[str, str]:
    """Redis list keys of the waiting and delayed messages of each queue."""
    ns = dramatiq_namespace(settings)
    keys = {}
    for queue in QUEUES:
        keys[queue] = f"{ns}:{queue}"
        keys[f"{queue}.delayed"] = f"{ns}:{queue}.DQ"
    return keys


def dead_letter_key(settings: Settings, queue: str) -> str:
    """Redis hash of the dead-lettered messages of ``queue``."""
    return f"{dramatiq_namespace(settings)}:{queue}.XQ.msgs"
