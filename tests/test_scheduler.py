"""The scheduler rides out Redis: not there at start-up, or restarted empty between ticks."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from scheduler.bridge import DramatiqScheduler, scheduled_jobs_key
from scheduler.schedule import schedule_table
from tests.support import free_port
from workers.broker import SWEEPS_QUEUE


def dispatched(broker: StubBroker) -> int:
    """Periodic messages sent so far (the stub broker's sweeps queue)."""
    return broker.queues[SWEEPS_QUEUE].qsize()


def wait_for(check, timeout: float = 10.0) -> None:
    """Until ``check()`` is true (a Redis still starting counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def ticking(settings) -> Iterator:
    """Start a scheduler thread on ``url`` (tick 0.1 s); stopped at the end."""
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start(url: str, prefix: str) -> tuple[DramatiqScheduler, StubBroker]:
        broker = StubBroker()
        broker.declare_queue(SWEEPS_QUEUE)
        scheduler = DramatiqScheduler(redis.Redis.from_url(url, socket_timeout=1), broker,
                                      prefix, tick=0.1)
        stop = threading.Event()
        thread = threading.Thread(target=scheduler.run_until,
                                  args=(stop, schedule_table(settings)), daemon=True)
        thread.start()
        started.append((stop, thread))
        return scheduler, broker

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(timeout=10)


def test_a_scheduler_started_before_redis_waits_for_it_then_dispatches(ticking):
    # Given a scheduler started while its Redis is not there yet
    port = free_port()
    url, prefix = f"redis://127.0.0.1:{port}/0", f"sch-{uuid.uuid4().hex[:6]}"
    _, broker = ticking(url, prefix)
    time.sleep(0.5)  # (a few ticks that cannot reach it)
    with tempfile.TemporaryDirectory() as root:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # When Redis comes, then the scheduler registers the schedule and dispatches
            client = redis.Redis.from_url(url)
            wait_for(lambda: client.zcard(scheduled_jobs_key(prefix)) > 0)
            wait_for(lambda: dispatched(broker) > 0)
            client.close()
        finally:
            server.kill()
            server.wait()


def test_a_schedule_lost_between_ticks_is_registered_again(ticking, settings):
    # Given a scheduler that registered its schedule and dispatches
    prefix = f"{settings.redis_prefix}-sch-{uuid.uuid4().hex[:6]}"
    scheduler, broker = ticking(settings.redis_url, prefix)
    client = redis.Redis.from_url(settings.redis_url)
    wait_for(lambda: client.zcard(scheduled_jobs_key(prefix)) > 0)
    # When every key it had is gone at once, with no error it could see (a restarted Redis)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    # Then it notices, registers the schedule again, and goes on dispatching
    wait_for(lambda: client.zcard(scheduled_jobs_key(prefix)) > 0)
    wait_for(lambda: client.exists(scheduler.key))
    before = dispatched(broker)
    wait_for(lambda: dispatched(broker) > before)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()
