"""An in-process worker stopped right after it started stops: ``bootstrap.start_worker``
returns only once Dramatiq's threads run (each sets its ``running`` flag when it begins,
so a stop that came sooner was undone and ``Worker.stop`` waited ten minutes)."""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.worker import WorkerThread

from workers import bootstrap


@pytest.fixture
def slow_threads(monkeypatch) -> StubBroker:
    """A broker with one queue, whose worker threads begin 0.2 s after they are started
    (as on a busy machine)."""
    broker = StubBroker()
    dramatiq.actor(lambda: None, actor_name="noop", broker=broker)
    begin = WorkerThread.run

    def late(self) -> None:
        time.sleep(0.2)
        begin(self)

    monkeypatch.setattr(WorkerThread, "run", late)
    return broker


def test_a_worker_stopped_as_soon_as_it_started_stops(slow_threads) -> None:
    worker = dramatiq.Worker(slow_threads, worker_threads=2, worker_timeout=20)
    bootstrap.start_worker(worker)
    began = time.monotonic()
    worker.stop(timeout=2000)
    assert time.monotonic() - began < 2
    assert not any(thread.is_alive() for thread in worker.workers)


def test_a_bare_start_and_stop_leaves_a_thread_running(slow_threads) -> None:
    # (the race start_worker closes)
    worker = dramatiq.Worker(slow_threads, worker_threads=2, worker_timeout=20)
    worker.start()
    worker.stop(timeout=500)
    try:
        assert any(thread.is_alive() for thread in worker.workers)
    finally:
        for thread in worker.workers:
            thread.stop()
            thread.join(2)
