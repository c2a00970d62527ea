"""An in-process worker stopped right after it started stops: ``bootstrap.start_worker``
returns only once Dramatiq's threads run (each sets its ``running`` flag when it begins,
so a stop that came sooner was undone and ``Worker.stop`` waited ten minutes). And the
threads of a worker share its Redis client without failing for want of a connection."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.worker import WorkerThread

from workers import bootstrap
from workers.broker import build_broker, thread_client


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


def test_a_worker_thread_stuck_in_a_job_is_named_in_a_warning_not_waited_for(monkeypatch):
    from types import SimpleNamespace

    from tests import inprocess

    broker = StubBroker()
    release, started = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, actor_name="stuck_in_a_job")
    def stuck_in_a_job() -> None:
        started.set()
        release.wait(30)

    broker.declare_queue("default")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    bootstrap.start_worker(worker)
    stuck_in_a_job.send()
    assert started.wait(5)
    monkeypatch.setattr(inprocess, "STOP_SECONDS", 0.3)
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match=r"(?s)1 worker thread\(s\) still running.*release\.wait"):
        inprocess.InProcessStack.kill(SimpleNamespace(procs={"worker": worker}), "worker")
    assert time.monotonic() - t0 < 5
    release.set()


def test_many_threads_share_the_worker_client_by_waiting_not_failing(settings) -> None:
    # Given a worker's client for 4 threads (a pool of 20), and 150 threads at once each
    # holding a connection for 0.1 s (redis-py 8's default pool refuses its 101st)
    client = thread_client(settings.redis_url, threads=4)
    key = f"{settings.redis_prefix}:nothing-{time.monotonic_ns()}"
    together = threading.Barrier(150)
    failures: list[BaseException] = []

    def hold() -> None:
        together.wait()
        try:
            client.blpop([key], timeout=0.1)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=hold) for _ in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every call ran, through no more connections than the pool's size
    assert failures == []
    assert len(client.connection_pool._connections) <= 20
    client.close()


def test_the_broker_shares_such_a_client_sized_for_the_process(settings) -> None:
    # Given a worker process's settings with 120 threads
    previous = dramatiq.get_broker()
    broker = build_broker(replace(settings, worker_threads=120))
    try:
        # Then its broker's pool waits rather than refuses, with a connection per thread
        pool = broker.client.connection_pool
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert pool.max_connections == 120 + 16
    finally:
        broker.close()
        dramatiq.set_broker(previous)
