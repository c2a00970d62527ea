"""The workers' Redis broker and consumer (``workers.consumer``): deliveries counted by
the fetch, acknowledgements sent with the next fetch, fetches in batches, unrun messages
put back, a dead worker's messages brought back by maintenance on a clock.

Against the Redis on 127.0.0.1, each test in a key space of its own, with in-process
Dramatiq workers (the end-to-end tests run the same consumer in worker processes).
"""

from __future__ import annotations

import json
import queue as stdqueue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.encoder import DecodeError
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import CurrentMessage

from workers.broker import COMMANDS_QUEUE, SWEEPS_QUEUE, MessageEncoder, send_jobs
from workers.consumer import DELIVERIES, FastHandOff, JobBroker, WorkQueue


class Space:
    """One test's key space: brokers made in it share its queues and delivery counts."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.namespace = f"{prefix}:dramatiq"
        self.deliveries = f"{prefix}:deliveries"
        self.client = redis.Redis.from_url(url)
        self.brokers: list[JobBroker] = []

    def broker(self, heartbeat_timeout: int = 60_000) -> JobBroker:
        broker = JobBroker(deliveries_key=self.deliveries, counted_queues=(COMMANDS_QUEUE,),
                           url=self.url, namespace=self.namespace,
                           heartbeat_timeout=heartbeat_timeout, maintenance_interval=0.1)
        broker.add_middleware(CurrentMessage())
        for queue in (COMMANDS_QUEUE, SWEEPS_QUEUE):
            broker.declare_queue(queue)
        self.brokers.append(broker)
        return broker

    def counts(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.deliveries).items()}

    def left(self) -> tuple[int, int, int]:
        """Messages still queued, still held in some worker's ack set, still stored."""
        queue = f"{self.namespace}:{COMMANDS_QUEUE}"
        held = sum(self.client.scard(key)
                   for key in self.client.keys(f"{self.namespace}:__acks__.*.{COMMANDS_QUEUE}"))
        return self.client.llen(queue), held, self.client.hlen(f"{queue}.msgs")


@pytest.fixture
def space(settings) -> Iterator[Space]:
    space = Space(settings.redis_url, f"{settings.redis_prefix}:consumer-{uuid.uuid4().hex[:8]}")
    yield space
    for broker in space.brokers:
        broker.close()
    keys = space.client.keys(f"{space.prefix}:*")
    if keys:
        space.client.delete(*keys)
    space.client.close()


def recording(broker: JobBroker, runs: list, seconds: float = 0.0) -> None:
    """Declare actor ``t.work`` on ``broker``: it records (job id, delivery number), and
    takes ``seconds``."""
    def work(job_id: str) -> None:
        message = CurrentMessage.get_current_message()
        time.sleep(seconds)
        runs.append((job_id, message.options.get(DELIVERIES)))

    dramatiq.actor(work, broker=broker, actor_name="t.work", queue_name=COMMANDS_QUEUE)


def send(broker: JobBroker, n: int) -> list[str]:
    jobs = [str(uuid.uuid4()) for _ in range(n)]
    send_jobs(broker, [(job, "t.work") for job in jobs])
    return jobs


def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_two_workers_run_each_message_once_counted_once_acknowledged_in_batches(space):
    # Given 400 job messages and two worker processes' brokers on the same queue, whose
    # fetch calls are counted and whose per-message acknowledgement must not be used
    runs: list = []
    fetches = Counter()
    brokers = [space.broker(), space.broker()]
    for broker in brokers:
        recording(broker, runs, seconds=0.001)
        script = broker.fetch_script
        broker.fetch_script = (lambda s, b: lambda **kw: (fetches.update([b.broker_id]),
                                                          s(**kw))[1])(script, broker)
        broker.do_ack = None  # (Dramatiq's own, one round trip per message)
    jobs = send(brokers[0], 400)
    # When both run them, eight threads each
    workers = [dramatiq.Worker(b, worker_threads=8, worker_timeout=20) for b in brokers]
    for worker in workers:
        worker.start()
    try:
        until(lambda: len(runs) == 400)
        calls = sum(fetches.values())
    finally:
        for worker in workers:
            worker.stop()
    # Then each ran once, as its first delivery, counted once in Redis
    assert sorted(job for job, _ in runs) == sorted(jobs)
    assert {number for _, number in runs} == {1}
    assert space.counts() == dict.fromkeys(jobs, 1)
    # ... with one fetch call per batch of up to half the window (8 here), not per message
    assert calls <= 400 / 4, calls  # (about 75 here; 113 when each ack brings a fetch)
    # ... and once the workers stopped, every message was acknowledged: none is left
    assert space.left() == (0, 0, 0)


def test_a_dead_workers_messages_come_back_counted_as_a_second_delivery(space):
    # Given a worker that took three messages and died running them (no ack, no close,
    # no heartbeat any more)
    dying = space.broker()
    jobs = send(dying, 3)
    consumer = dying.consume(COMMANDS_QUEUE, prefetch=4, timeout=20)
    taken = [next(consumer) for _ in range(3)]
    assert [m.options[DELIVERIES] for m in taken] == [1, 1, 1]
    assert space.left() == (0, 3, 3)
    # When another worker, which deems a worker dead after 300 ms, runs on
    runs: list = []
    living = space.broker(heartbeat_timeout=300)
    recording(living, runs)
    worker = dramatiq.Worker(living, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        until(lambda: len(runs) == 3)
    finally:
        worker.stop()
    # Then its maintenance brought them back, and they ran counted as second deliveries
    assert sorted(runs) == sorted((job, 2) for job in jobs)
    assert space.counts() == dict.fromkeys(jobs, 2)
    assert space.left() == (0, 0, 0)


def test_closing_puts_back_what_was_fetched_and_not_run_uncounted(space):
    # Given a consumer that fetched six messages, ran and acknowledged one
    broker = space.broker()
    jobs = send(broker, 6)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    first = next(consumer)
    consumer.ack(first)
    # When it closes (its worker stops)
    consumer.close()
    # Then the five it never handed out are queued again, in no worker's hands, and
    # their deliveries are taken back; the acknowledged one is gone
    assert space.left() == (5, 0, 5)
    assert space.counts() == {job: int(job == first.message_id) for job in jobs}


def test_messages_handed_out_and_not_run_are_put_back_on_requeue(space):
    broker = space.broker()
    send(broker, 3)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    handed = [next(consumer) for _ in range(3)]
    consumer.requeue(handed[1:])
    consumer.ack(handed[0])
    consumer.close()
    assert space.left() == (2, 0, 2)
    assert sorted(space.counts().values()) == [0, 0, 1]


def test_acknowledgements_a_lost_connection_kept_are_sent_by_the_next_consumer(space):
    # Given a consumer that acknowledged a message, then lost Redis on its next fetch
    broker = space.broker()
    send(broker, 2)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=1, timeout=20)
    done = next(consumer)
    consumer.ack(done)
    script = broker.fetch_script

    def lost(**_):
        raise redis.ConnectionError("lost")

    broker.fetch_script = lost
    with pytest.raises(ConnectionClosed):
        next(consumer)
    assert space.left() == (1, 1, 2)  # (the acknowledgement did not reach Redis)
    # When the worker's consumer thread starts a new consumer, once Redis is back
    broker.fetch_script = script
    successor = broker.consume(COMMANDS_QUEUE, prefetch=1, timeout=20)
    second = next(successor)
    # Then its first fetch sent the acknowledgement: only the second message is held
    assert second.message_id != done.message_id
    assert space.left() == (0, 1, 1)


def test_a_message_that_is_not_a_counted_job_carries_no_delivery_number(space):
    # (a retried job's body still holds the option from its first delivery)
    broker = space.broker()
    broker.enqueue(dramatiq.Message(queue_name=SWEEPS_QUEUE, actor_name="t.tick", args=(),
                                    kwargs={}, options={DELIVERIES: 5}))
    consumer = broker.consume(SWEEPS_QUEUE, prefetch=2, timeout=20)
    message = next(consumer)
    assert DELIVERIES not in message.options
    assert space.counts() == {}


def test_maintenance_runs_on_its_clock_not_on_every_call(space):
    broker = space.broker()
    runs = Counter()
    broker.do_maintain = lambda queue: runs.update([queue])
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=2, timeout=10)
    calls, deadline = 0, time.monotonic() + 0.45
    while time.monotonic() < deadline:
        next(consumer)
        calls += 1
    assert 4 <= runs[COMMANDS_QUEUE] <= 6  # every 0.1 s
    assert calls > 2 * runs[COMMANDS_QUEUE]
    assert broker._should_do_maintenance("fetch") == 0


def test_an_idle_consumer_is_woken_by_a_sending_not_by_its_backoff(space):
    # Given a consumer that has found its queue empty long enough to back off 1-2 s
    broker = space.broker()
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=2, timeout=2000)
    consumer.misses = 20
    assert next(consumer) is None  # (the first idle wait also subscribes)
    consumer.misses = 20
    # When a job is sent 100 ms into its next wait
    waited: list[float] = []
    started = time.monotonic()
    idle = threading.Thread(target=lambda: (next(consumer), waited.append(
        time.monotonic() - started)))
    idle.start()
    time.sleep(0.1)
    [job] = send(broker, 1)
    idle.join(5)
    # Then it wakes at once, and its next call fetches the job
    assert waited and waited[0] < 0.5, waited
    assert next(consumer).message_id == job


@pytest.mark.parametrize("payload", [{"amount": 7, "note": "café ☕"}, {"text": "\ud800"},
                                     {"big": 10**30}, {"nested": [[1.5, None, True]]}])
def test_the_message_encoding_is_plain_json_whatever_the_payload(payload):
    # (msgspec where it can, the standard library where it cannot: a lone surrogate, an
    # integer past 64 bits)
    message = dramatiq.Message(queue_name=COMMANDS_QUEUE, actor_name="t.work",
                               args=("job", 1, payload), kwargs={}, options={})
    encoder = MessageEncoder()
    body = encoder.encode(message.asdict())
    assert json.loads(body)["args"] == ["job", 1, payload]
    assert encoder.decode(body) == json.loads(body)


def test_a_message_that_is_not_json_is_a_decode_error():
    with pytest.raises(DecodeError):
        MessageEncoder().decode(b'{"queue_name": ')
    with pytest.raises(DecodeError):
        MessageEncoder().decode(b"\xff\xfe")


def test_a_batch_whose_fetch_reply_was_lost_is_put_back_by_the_ack_set_check(space):
    # Given a fetch that ran in Redis but whose reply never came back
    broker = space.broker()
    jobs = send(broker, 3)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    script = broker.fetch_script

    def ran_then_lost(**kw):
        script(**kw)
        raise redis.ConnectionError("reply lost")

    broker.fetch_script = ran_then_lost
    with pytest.raises(ConnectionClosed):
        next(consumer)
    broker.fetch_script = script
    assert space.left() == (0, 3, 3)  # (held by this live worker, known to no one)
    # When its successor checks the ack set (at its first maintenance run)
    successor = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    got = [next(successor) for _ in range(3)]
    # Then they came back, and their uncounted fetch was taken back
    assert sorted(m.message_id for m in got) == sorted(jobs)
    assert {m.options[DELIVERIES] for m in got} == {1}


def test_a_restarted_delay_consumer_puts_back_the_delayed_messages_it_dropped(space):
    # (Dramatiq's consumer thread starts a new, empty delay queue when it reconnects)
    broker = space.broker()
    broker.enqueue(dramatiq.Message(queue_name=COMMANDS_QUEUE, actor_name="t.work",
                                    args=("job",), kwargs={}, options={}), delay=60_000)
    delayed = broker.consume(f"{COMMANDS_QUEUE}.DQ", prefetch=8, timeout=20)
    assert next(delayed) is not None
    held = f"{space.namespace}:__acks__.{broker.broker_id}.{COMMANDS_QUEUE}.DQ"
    assert space.client.scard(held) == 1
    successor = broker.consume(f"{COMMANDS_QUEUE}.DQ", prefetch=8, timeout=20)
    assert next(successor).args == ("job",)  # (put back, then fetched again)


def test_a_retry_that_could_not_be_sent_leaves_its_message_to_come_back(space):
    # Given a fetched message whose retry could not be enqueued (Redis refused it)
    broker = space.broker()
    [job] = send(broker, 1)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    message = next(consumer)
    enqueue = broker.do_enqueue

    def refused(*_):
        raise redis.ConnectionError("down")

    broker.do_enqueue = refused
    with pytest.raises(redis.ConnectionError):
        broker.enqueue(message._message, delay=10)
    broker.do_enqueue = enqueue
    # When Dramatiq acknowledges it all the same (its Retries only logs the failure)
    consumer.ack(message)
    consumer._fetch(0)
    # Then it stays in the ack set, and the ack set's check puts it back on the queue
    assert space.left() == (0, 1, 1)
    consumer._reconcile()
    assert space.left() == (1, 0, 1)
    assert next(consumer).message_id == job


def test_an_undecodable_message_is_dead_lettered_and_the_next_one_served(space):
    broker = space.broker()
    queue = f"{space.namespace}:{COMMANDS_QUEUE}"
    space.client.hset(f"{queue}.msgs", "bad.0", b"{not json")
    space.client.rpush(queue, "bad.0")
    [job] = send(broker, 1)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=8, timeout=20)
    assert next(consumer).message_id == job
    assert space.client.zcard(f"{space.namespace}:{COMMANDS_QUEUE}.XQ") == 1


def test_maintenance_sends_acks_that_wait_behind_a_full_window_and_drains_wake_ups(space):
    # Given a consumer whose window is full (long jobs), one of which finished, while
    # sendings keep publishing wake-ups it does not read
    broker = space.broker()
    send(broker, 4)
    consumer = broker.consume(COMMANDS_QUEUE, prefetch=4, timeout=20)
    consumer._idle(0)  # (subscribed)
    held = [next(consumer) for _ in range(4)]
    consumer.ack(held[0])
    for _ in range(50):
        send(broker, 1)
    # When its maintenance runs
    consumer.maintained = 0.0
    assert next(consumer) is None  # (the window is still full: 3 of 4 held)
    # Then the finished message's acknowledgement went, and no wake-up is left unread
    assert space.left()[1:] == (3, 53)
    assert consumer.wakes.get_message(timeout=0) is None
    # (and a run renews the heartbeat at least four times per heartbeat timeout)
    assert space.broker(heartbeat_timeout=2_000).maintenance_interval == 0.1
    assert space.broker(heartbeat_timeout=200).maintenance_interval == 0.05


def test_the_work_queue_hands_each_item_to_exactly_one_thread_and_join_waits():
    # Given a WorkQueue, 4 threads putting 5,000 items each and 8 taking them
    work = WorkQueue()
    taken: list[int] = []
    lock = threading.Lock()

    def put(base: int) -> None:
        for n in range(5000):
            work.put(base + n)

    def take() -> None:
        while True:
            try:
                item = work.get(timeout=0.2)
            except stdqueue.Empty:  # (a wake-up)
                return
            with lock:
                taken.append(item)
            work.task_done()

    threads = [threading.Thread(target=put, args=(k * 5000,)) for k in range(4)]
    threads += [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    work.join()  # returns only once every item is finished with
    assert len(taken) == 20_000 and work.unfinished_tasks == 0
    work.wake(8)
    for thread in threads:
        thread.join()
    # Then each item reached exactly one thread, and one thread's items kept their order
    assert sorted(taken) == list(range(20_000))
    first = [n for n in taken if n < 5000]
    assert first == sorted(first)
    with pytest.raises(stdqueue.Empty):
        work.get_nowait()


def test_a_worker_stops_at_once_whatever_its_threads_were_waiting_for():
    """CPython's C ``SimpleQueue.get`` with a timeout can wait past its deadline until the
    next put, when a getter wakes late and another took its item. With 8 worker threads
    waiting 50 ms at a time, GIL contention and messages spaced around 50 ms, a worker
    whose last message had come that way waited ten minutes in ``stop``."""
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    broker.add_middleware(FastHandOff())
    ran: list[int] = []

    @dramatiq.actor(broker=broker)
    def work(n: int) -> None:
        sum(range(20_000))  # holds the GIL a moment
        ran.append(n)

    hogging = True

    def hog() -> None:  # other threads of the process want the GIL too
        while hogging:
            sum(range(10_000))

    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for thread in hogs:
        thread.start()
    stops: list[float] = []
    try:
        for round_ in range(2):
            worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=50)
            worker.start()
            gaps = [0, 0.0001, 0.001, 0.01, 0.045, 0.049, 0.05, 0.051]
            for n in range(40):
                work.send(n)
                time.sleep(gaps[n % len(gaps)])
            until(lambda round_=round_: len(ran) == 40 * (round_ + 1), timeout=30)
            time.sleep(0.3)  # no message comes now: every thread is waiting
            started = time.monotonic()
            worker.stop(timeout=3_000)
            stops.append(time.monotonic() - started)
            assert not [t for t in worker.workers if t.is_alive()], "a thread still waits"
    finally:
        hogging = False
        for thread in hogs:
            thread.join()
    assert max(stops) < 2, stops


def test_a_worker_on_the_broker_hands_messages_over_through_the_work_queue(space):
    # Given a broker with the hand-off middleware, and a worker that runs 50 messages
    runs: list = []
    broker = space.broker()
    broker.add_middleware(FastHandOff())
    recording(broker, runs)
    jobs = send(broker, 50)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=20)
    worker.start()
    try:
        until(lambda: len(runs) == 50)
        worker.join()
        # Then the worker's queue is ours, and each message ran once
        assert isinstance(worker.work_queue, WorkQueue)
    finally:
        worker.stop()
    assert sorted(job for job, _ in runs) == sorted(jobs)
    assert space.left() == (0, 0, 0)
