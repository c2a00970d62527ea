"""Worker heartbeats and the scheduler's status, as the operator console reads them.

Binding contract: the issue "Operator console" (workers, schedules) and API.md, section
"Operator console".
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.stub import StubBroker

from scheduler.bridge import DramatiqScheduler
from scheduler.schedule import schedule_table
from scheduler.status import schedule_status
from workers.broker import SWEEPS_QUEUE
from workers.heartbeat import TTL_BEATS, Heartbeats, read_workers

INTERVAL = 0.1  # seconds between beats in these tests


def read(url: str, prefix: str, now: float | None = None) -> list[dict]:
    async def go() -> list[dict]:
        client = aioredis.Redis.from_url(url)
        try:
            return await read_workers(client, prefix, time.time() if now is None else now)
        finally:
            await client.aclose()

    return asyncio.run(go())


def eventually(check: Callable[[], object], timeout: float = 3.0) -> object:
    """The first truthy result of ``check``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
    return result


@dataclass
class Beating:
    """A stub broker with the heartbeat middleware in a key space of its own, and an
    actor ``blocker`` that waits for ``release``."""

    broker: dramatiq.Broker
    heartbeats: Heartbeats
    prefix: str
    release: threading.Event


@pytest.fixture
def beating(settings) -> Iterator[Beating]:
    prefix = f"{settings.redis_prefix}-hb-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(settings.redis_url)
    broker, heartbeats = StubBroker(), Heartbeats(client, prefix, INTERVAL)
    broker.add_middleware(heartbeats)
    broker.declare_queue("default")
    release = threading.Event()
    dramatiq.actor(lambda: release.wait(5), broker=broker, actor_name="blocker")
    yield Beating(broker, heartbeats, prefix, release)
    release.set()
    client.close()


def test_a_worker_beats_with_its_running_job_and_leaves_on_shutdown(settings, beating):
    prefix = beating.prefix
    # Given a worker process that runs a job which blocks
    worker = dramatiq.Worker(beating.broker, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        message = beating.broker.get_actor("blocker").send()
        # When reading the workers
        [seen] = eventually(lambda: [w for w in read(settings.redis_url, prefix)
                                     if w["running"]])
        # Then the worker is there, with its process, queues and the job it runs
        assert seen["id"].startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert (seen["pid"], seen["host"], seen["queues"]) == (
            os.getpid(), socket.gethostname(), ["default"])
        assert 0 <= seen["heartbeat_age_seconds"] < 1
        [job] = seen["running"]
        assert (job["job_id"], job["type"]) == (message.message_id, "blocker")
        assert 0 <= job["seconds"] < 3
        # ... and once the job is over, it runs nothing
        beating.release.set()
        eventually(lambda: read(settings.redis_url, prefix)[0]["running"] == [])
    finally:
        worker.stop()
    # When the worker shuts down, its record goes at once
    assert read(settings.redis_url, prefix) == []


def test_a_killed_workers_record_expires(settings, beating):
    prefix = beating.prefix
    # Given a worker that beats
    worker = dramatiq.Worker(beating.broker, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        eventually(lambda: read(settings.redis_url, prefix))
        # When it stops beating without a goodbye (a killed process)
        [beat] = beating.heartbeats.beats.values()
        beat.stop(forget=False)
        stopped = time.monotonic()
        # Then its heartbeat ages, and within TTL_BEATS intervals it is gone
        later = read(settings.redis_url, prefix, time.time() + 1)
        assert later and later[0]["heartbeat_age_seconds"] >= 1
        eventually(lambda: read(settings.redis_url, prefix) == [], timeout=3)
        assert time.monotonic() - stopped <= TTL_BEATS * INTERVAL + 0.5
    finally:
        worker.stop()


def status(url: str, prefix: str, settings) -> dict:
    async def go() -> dict:
        client = aioredis.Redis.from_url(url)
        try:
            return await schedule_status(client, prefix, settings)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_schedule_status_names_the_active_scheduler_and_when_each_schedule_is_due(settings):
    # Given a scheduler that ticks, with the schedule registered
    prefix = f"{settings.redis_prefix}-sch-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(settings.redis_url)
    broker = StubBroker()
    broker.declare_queue(SWEEPS_QUEUE)  # (a due schedule is sent there at once)
    scheduler = DramatiqScheduler(client, broker, prefix, tick=0.1)
    table = schedule_table(settings)
    scheduler.register(table)
    assert status(settings.redis_url, prefix, settings)["active"] is None
    stop = threading.Event()
    ticker = threading.Thread(target=scheduler.run_until, args=(stop,))
    ticker.start()
    try:
        # When reading its status
        seen = eventually(lambda: (s := status(settings.redis_url, prefix, settings))["active"]
                          and s)
        # Then it names the scheduler, and every schedule's next due time (from the slot)
        assert seen["active"] == scheduler.active_name
        assert seen["active"].startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert set(seen["next_due"]) == {e.id for e in table}
        now = time.time()
        for entry in table:
            if entry.interval:
                due = seen["next_due"][entry.id]
                assert now - 1 <= due <= now + entry.interval + 1, entry
                assert due % entry.interval == 0, entry
    finally:
        stop.set()
        ticker.join(5)
    # ... and a scheduler that stops no longer claims to be active
    assert status(settings.redis_url, prefix, settings)["active"] is None
    client.close()
