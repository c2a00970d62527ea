"""The Redis broker and consumer the workers use: Dramatiq's, with fewer round trips.

Dramatiq's Redis consumer acknowledges each message with a round trip of its own, made
by the worker thread that ran it, and fetches whenever one slot of its prefetch window
frees up; the lifecycle then made one more round trip to count the delivery. Each of
those costs a worker thread far more than its own microseconds: it must win the GIL back
from seven others. Here:

- **a delivery is counted by the fetch itself**: one Lua script pops the messages, holds
  them in this worker's ack set, counts each job message's delivery (``HINCRBY`` by job
  id, before the job runs: a delivery that kills its worker is still counted) and reads
  their bodies; the count reaches the job as the message option ``DELIVERIES``;
- **acknowledgements are queued, and sent with the next fetch**: a worker thread only
  appends the message's Redis id; the consumer thread sends whatever has queued in the
  same script call as its next fetch (an ack lost to a crash only means a redelivery,
  which finds its job terminal and is skipped);
- **fetches come in batches**: when the prefetch window is more than half full the
  consumer waits for acknowledgements to free half of it, then fetches that many at once;
- **an idle consumer is woken when messages are sent**: every sending publishes on the
  queue's wake channel (in the same round trip), and a consumer that found its queue
  empty waits on that channel for up to its poll backoff instead of sleeping through
  it (a job sent 5 ms into a 100 ms sleep waited 95 ms for a worker);
- **maintenance runs on a clock**: the broker's own maintenance (which brings a dead
  worker's messages back) runs every ``BROKER_MAINTENANCE_INTERVAL`` seconds per queue,
  instead of on a random share of calls; it also renews this worker's heartbeat, sends
  acknowledgements that waited behind a full window, and reads away wake-ups that piled
  up while the consumer was busy;
- **nothing sits in a live worker's ack set for good**: every tenth run, the consumer
  puts back what its ack set holds and nothing in the process knows of (a batch whose
  fetch reply was lost, the delayed messages a restarted consumer thread dropped, a
  message whose retry could not be sent: Dramatiq's ``Retries`` only logs that, and the
  message would be acknowledged and its job lost); an undecodable body is
  dead-lettered instead of stopping the consumer.

It keeps Dramatiq's key layout (the queue list, its ``.msgs`` hash, the per-worker ack
sets, the heartbeats), which is why dramatiq is pinned below 3, and why the end-to-end
tests run these messages through real worker processes. Every message sent through
:class:`JobBroker` has a Redis id ``<message id>.<random>``, so the fetch script can tell
the job from the id without decoding the body.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterable

import redis
from dramatiq import Middleware, Worker
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff, current_millis, dq_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

log = logging.getLogger(__name__)

DELIVERIES = "bazaar_deliveries"  # message option: this delivery's number (counted ones)

# KEYS: the queue's list, its bodies hash, this worker's ack set for it, the heartbeats,
# the deliveries hash. ARGV: now (ms), worker id, how many to fetch, whether to count
# deliveries ("1" or "0"), then the Redis ids to acknowledge. Returns id/body/count
# triples.
_FETCH = """
redis.call("ZADD", KEYS[4], ARGV[1], ARGV[2])
for i = 5, #ARGV do
  if redis.call("SREM", KEYS[3], ARGV[i]) == 1 then redis.call("HDEL", KEYS[2], ARGV[i]) end
end
local out = {}
for _ = 1, tonumber(ARGV[3]) do
  local id = redis.call("LPOP", KEYS[1])
  if not id then break end
  local body = redis.call("HGET", KEYS[2], id)
  if body then  -- (an id whose body is gone was acknowledged meanwhile)
    redis.call("SADD", KEYS[3], id)
    local job = ARGV[4] == "1" and string.match(id, "^(.+)%.[^.]*$")
    out[#out + 1] = id
    out[#out + 1] = body
    out[#out + 1] = job and redis.call("HINCRBY", KEYS[5], job, 1) or 0
  end
end
return out
"""

# KEYS: the queue's list, its bodies hash, this worker's ack set for it, the deliveries
# hash. ARGV: whether deliveries are counted, then the Redis ids to put back. A message
# put back unrun was not delivered: its count goes back down.
_REQUEUE = """
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call("SREM", KEYS[3], id) == 1 and redis.call("HEXISTS", KEYS[2], id) == 1 then
    redis.call("RPUSH", KEYS[1], id)
    local job = ARGV[1] == "1" and string.match(id, "^(.+)%.[^.]*$")
    if job then redis.call("HINCRBY", KEYS[4], job, -1) end
  end
end
"""
RECONCILE_EVERY = 10  # maintenance runs between two checks of the ack set


def wake_channel(namespace: str, queue_name: str) -> str:
    """The channel on which a sending tells idle consumers of ``queue_name`` to fetch."""
    return f"{namespace}:{queue_name}.wake"


def redis_message_id(message_id: str) -> str:
    """A fresh Redis id for one sending of ``message_id`` (a job is sent again by the
    re-send sweep, and retried, each time under a new id). 48 random bits from
    ``random`` (re-seeded in a forked child), not a ``getrandom`` call per message."""
    return f"{message_id}.{random.getrandbits(48):012x}"


class _QueueState:
    """What one worker process knows of one queue's messages, by Redis id; it outlives a
    consumer that lost its connection, so that its successor carries on."""

    def __init__(self) -> None:
        self.held: set[str] = set()  # handed to the worker, not yet acknowledged
        self.acks: deque[str] = deque()  # acknowledged, not yet told to Redis
        self.unrun: deque[str] = deque()  # to put back on the queue, not yet put


class JobBroker(RedisBroker):
    """Dramatiq's Redis broker with the consumer described above.

    ``deliveries_key`` is the hash of job id -> deliveries; ``counted_queues`` are the
    queues whose messages are jobs (their message id is the job id);
    ``maintenance_interval`` is the seconds between two maintenance runs of a queue (at
    most a quarter of the heartbeat timeout: a run also renews the heartbeat).
    """

    def __init__(self, *, deliveries_key: str, counted_queues: Iterable[str],
                 maintenance_interval: float = 1.0, **options):
        super().__init__(**options)
        self.maintenance_interval = min(maintenance_interval, self.heartbeat_timeout / 4000)
        self.deliveries_key = deliveries_key
        self.counted_queues = frozenset(counted_queues)
        self.fetch_script = self.client.register_script(_FETCH)
        self.requeue_script = self.client.register_script(_REQUEUE)
        self.unsent_retries: set[str] = set()  # Redis ids whose retry could not be sent
        self._states: dict[str, _QueueState] = {}
        self._lock = threading.Lock()

    @property
    def consumer_class(self):
        """The batching consumer."""
        return _JobConsumer

    def queue_state(self, queue_name: str) -> _QueueState:
        """This process's state of ``queue_name`` (see :class:`_QueueState`)."""
        with self._lock:
            return self._states.setdefault(queue_name, _QueueState())

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue ``message`` (after ``delay`` ms) under a Redis id that names it.

        If it cannot be sent and it is a retry of a fetched message, that message is not
        acknowledged: it stays in this worker's ack set, and its consumer puts it back.
        (Dramatiq's ``Retries`` logs the failure and lets the original be acknowledged,
        which would lose the job.)
        """
        retried = message.options.get("redis_message_id")
        queue_name = message.queue_name
        options: dict = {"redis_message_id": redis_message_id(message.message_id)}
        if delay is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = current_millis() + delay
        message = message.copy(queue_name=queue_name, options=options)
        self.emit_before("enqueue", message, delay)
        try:
            self.do_enqueue(queue_name, options["redis_message_id"], message.encode())
        except redis.RedisError:
            if retried is not None:
                self.unsent_retries.add(retried)
            raise
        with contextlib.suppress(redis.RedisError):  # (an idle consumer polls anyway)
            self.client.publish(wake_channel(self.namespace, queue_name), "")
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_all(self, queue_name: str, messages: list[Message]) -> None:
        """Enqueue ``messages`` on ``queue_name`` in one round trip: their bodies, their
        ids on the queue (after the bodies, in one MULTI, so no consumer pops an id whose
        body is not there), and the wake-up, where ``enqueue`` makes a Lua call each."""
        if not messages:
            return
        bodies = {}
        for message in messages:
            redis_id = redis_message_id(message.message_id)
            message = message.copy(options={"redis_message_id": redis_id})
            self.emit_before("enqueue", message, None)
            bodies[redis_id] = message.encode()
        queue = f"{self.namespace}:{queue_name}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{queue}.msgs", mapping=bodies)
        pipe.rpush(queue, *bodies)
        pipe.publish(wake_channel(self.namespace, queue_name), "")
        pipe.execute()

    def _should_do_maintenance(self, command: str) -> int:
        # Only when a consumer asks for it (``do_maintain``), on its clock.
        return int(command == "maintain")


class _JobConsumer(Consumer):
    """One queue's consumer in one worker process (see the module notes)."""

    def __init__(self, broker: JobBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.batch = max(1, prefetch // 2)
        self.timeout = timeout
        self.count = "1" if queue_name in broker.counted_queues else "0"
        self.ack_set = f"{broker.namespace}:__acks__.{broker.broker_id}.{queue_name}"
        queue = f"{broker.namespace}:{queue_name}"
        heartbeats = f"{broker.namespace}:__heartbeats__"
        self.fetch_keys = [queue, f"{queue}.msgs", self.ack_set, heartbeats,
                           broker.deliveries_key]
        self.requeue_keys = [queue, f"{queue}.msgs", self.ack_set, broker.deliveries_key]
        self.cache: deque[tuple[str, bytes, int]] = deque()  # fetched, not handed out
        self.state = broker.queue_state(queue_name)
        if queue_name.endswith(".DQ"):  # (a restarted consumer thread drops its delayed
            self.state.held.clear()     # messages; the ack set's check puts them back)
        self.room = threading.Event()  # set when the window has room for a batch
        self.wake_channel = wake_channel(broker.namespace, queue_name)
        self.wakes: redis.client.PubSub | None = None  # subscribed once first idle
        self.misses = 0
        self.maintained = 0.0
        self.maintenance_runs = 0

    @property
    def outstanding_message_count(self) -> int:
        """Messages fetched and not yet acknowledged."""
        return len(self.state.held) + len(self.cache)

    def ack(self, message: MessageProxy) -> None:
        """Queue the acknowledgement (called by the worker thread that ran it)."""
        redis_id = message.options["redis_message_id"]
        if redis_id in self.broker.unsent_retries:  # (left in the ack set, to go back)
            self.broker.unsent_retries.discard(redis_id)
        else:
            self.state.acks.append(redis_id)  # (before it leaves ``held``: see _reconcile)
        self.state.held.discard(redis_id)
        if len(self.state.held) <= self.prefetch - self.batch:
            self.room.set()

    def nack(self, message: MessageProxy) -> None:
        """Move the message to the dead-letter queue (rare: sent at once)."""
        redis_id = message.options["redis_message_id"]
        try:
            self._fetch(0)  # (the acknowledgements queued before it)
            self.broker.do_nack(self.queue_name, redis_id)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
        finally:
            self.state.held.discard(redis_id)
            self.room.set()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Put fetched messages that were not run back on their queue."""
        for message in messages:
            self.state.unrun.append(message.options["redis_message_id"])
            self.state.held.discard(message.options["redis_message_id"])
        try:
            self._fetch(0)  # (puts them back, and sends the queued acknowledgements)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def close(self) -> None:
        """Send the queued acknowledgements and put back what was fetched and not run
        (what cannot be sent now, the next consumer of this queue sends)."""
        self.state.unrun.extend(redis_id for redis_id, _, _ in self.cache)
        self.cache.clear()
        with contextlib.suppress(redis.RedisError):  # (the next consumer sends them)
            self._fetch(0)
        if self.wakes is not None:
            with contextlib.suppress(redis.RedisError):
                self.wakes.close()

    def __next__(self) -> MessageProxy | None:
        try:
            self._maintain()
            if not self.cache:
                room = self.prefetch - len(self.state.held)
                if room < self.batch:  # wait for the window to free a batch
                    self.room.clear()
                    if self.prefetch - len(self.state.held) < self.batch:
                        self.room.wait(self.timeout / 1000)
                    return None
                self._fetch(room)
            while self.cache:
                redis_id, body, deliveries = self.cache.popleft()
                try:
                    message = Message.decode(body)
                except DecodeError:
                    log.error("undecodable message dead-lettered",
                              extra={"queue": self.queue_name, "redis_id": redis_id})
                    self.broker.do_nack(self.queue_name, redis_id)
                    continue
                self.misses = 0
                if deliveries:
                    message.options[DELIVERIES] = deliveries
                else:  # (a retried message's body still holds its first count)
                    message.options.pop(DELIVERIES, None)
                self.state.held.add(redis_id)
                return MessageProxy(message)
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            self._idle(backoff_ms / 1000)
            return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _fetch(self, n: int) -> None:
        """Put back what is to be put back; acknowledge what has queued and fetch up to
        ``n`` messages, in one call."""
        if self.state.unrun:
            self._put_back()
        acks = _take(self.state.acks)
        try:
            reply = self.broker.fetch_script(
                keys=self.fetch_keys,
                args=[current_millis(), self.broker.broker_id, n, self.count, *acks])
        except redis.RedisError:  # (if it ran all the same, the ack set's check finds
            self.state.acks.extendleft(reversed(acks))  # what it fetched)
            raise
        self.cache.extend((reply[i].decode(), reply[i + 1], reply[i + 2])
                          for i in range(0, len(reply), 3))

    def _put_back(self) -> None:
        ids = _take(self.state.unrun)
        if ids:
            try:
                self.broker.requeue_script(keys=self.requeue_keys, args=[self.count, *ids])
            except redis.RedisError:
                self.state.unrun.extendleft(reversed(ids))
                raise

    def _idle(self, seconds: float) -> None:
        """Wait ``seconds``, or until a sending wakes this queue's consumers."""
        if self.wakes is None:
            self.wakes = self.broker.client.pubsub(ignore_subscribe_messages=True)
            self.wakes.subscribe(self.wake_channel)
        if self.wakes.get_message(timeout=seconds) is not None:
            self._drain_wakes()  # (one fetch answers every wake-up so far)

    def _drain_wakes(self) -> None:
        while self.wakes is not None and self.wakes.get_message(timeout=0) is not None:
            pass

    def _maintain(self) -> None:
        """On the clock: the broker's maintenance (and this worker's heartbeat);
        acknowledgements that waited for a fetch; wake-ups that piled up while busy;
        every ``RECONCILE_EVERY`` runs, the ack set's check."""
        now = time.monotonic()
        if now - self.maintained < self.broker.maintenance_interval:
            return
        self.maintained = now
        self.maintenance_runs += 1
        self.broker.do_maintain(self.queue_name)
        if self.state.acks:
            self._fetch(0)
        self._drain_wakes()
        if self.maintenance_runs % RECONCILE_EVERY == 1:
            self._reconcile()

    def _reconcile(self) -> None:
        """Put back what sits in this worker's ack set and nothing here holds: a batch
        whose fetch reply was lost, the delayed messages of a consumer that restarted, a
        message whose retry could not be sent. (Read the ack set first, then ``held``,
        then the unsent acknowledgements: an ack moves an id into the latter before it
        leaves ``held``, so a message acked meanwhile is in one of them.)"""
        members = {m.decode() for m in self.broker.client.smembers(self.ack_set)}
        if not members:
            return
        held = set(self.state.held)
        known = held | set(self.state.acks) | set(self.state.unrun)
        strays = members - known - {redis_id for redis_id, _, _ in self.cache}
        if strays:
            log.warning("putting back messages nothing holds",
                        extra={"queue": self.queue_name, "count": len(strays)})
            self.state.unrun.extend(strays)
            self._put_back()


def _take(ids: deque[str]) -> list[str]:
    """Everything in ``ids`` (which other threads append to), taken out."""
    taken = []
    try:
        while True:
            taken.append(ids.popleft())
    except IndexError:
        return taken


_WAKE = object()  # a wake-up, not an item: the ``get`` that takes it raises ``queue.Empty``


class WorkQueue:
    """The hand-off from a worker's consumer threads to its worker threads, in C.

    Dramatiq hands each message over through a ``queue.PriorityQueue``, whose ``put`` and
    ``get`` run a ``threading.Condition`` in Python: a tenth of a busy worker's GIL time.
    A ``queue.SimpleQueue`` does the same hand-off in C. Order is first in, first out,
    which is what the priority queue gave here: no actor of ours sets a priority (the
    delay queues, ordered by eta, stay Dramatiq's). It keeps the ``task_done``/``join``
    accounting ``dramatiq.Worker.join`` waits on.

    A ``get`` waits without a deadline, until an item or a wake-up (:meth:`wake`) comes.
    CPython's C ``SimpleQueue.get`` with a timeout can miss its deadline: a getter woken
    just after its deadline, whose item another getter took first, waits again with a
    negative time left, which means until the next ``put``. Dramatiq's worker threads
    wait 50 ms at a time to notice a stop, so when no message followed, one of them
    stayed blocked and the worker's ``stop`` waited ten minutes for it.
    :class:`FastHandOff` wakes every worker thread instead, once its stop flag is down.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # (taken directly: a Condition's ``with`` is Python)
        self._done = threading.Condition(self._lock)
        self.unfinished_tasks = 0

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        """Hand ``item`` over (never blocks: the queue is unbounded)."""
        with self._lock:
            self.unfinished_tasks += 1
        self._items.put(item)

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        """The next item, waiting for one if ``block`` (``timeout`` is not used: see the
        class); ``queue.Empty`` for a wake-up, or at once if not ``block``."""
        item = self._items.get(block)
        if item is _WAKE:
            raise queue.Empty
        return item

    def get_nowait(self) -> object:
        """The next item, or ``queue.Empty`` (wake-ups left over are skipped)."""
        while (item := self._items.get_nowait()) is _WAKE:
            pass
        return item

    def wake(self, getters: int) -> None:
        """Wake ``getters`` waiting ``get`` calls: each raises ``queue.Empty``."""
        for _ in range(getters):
            self._items.put(_WAKE)

    def task_done(self) -> None:
        """One item taken off is finished with."""
        with self._lock:
            self.unfinished_tasks -= 1
            if self.unfinished_tasks <= 0:
                self._done.notify_all()

    def join(self) -> None:
        """Wait until every item put has been finished with."""
        with self._done:
            while self.unfinished_tasks > 0:
                self._done.wait()


class FastHandOff(Middleware):
    """Gives every ``dramatiq.Worker`` a :class:`WorkQueue` before its threads start, and
    wakes its worker threads when it stops."""

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Swap the work queue in while no thread holds the old one."""
        worker.work_queue = WorkQueue()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        """Put each worker thread's stop flag down (as the worker's ``stop`` does next),
        then wake them all: each one waiting for an item takes a wake-up (or a message
        still queued, which it runs) and then sees the flag."""
        for thread in worker.workers:
            thread.stop()
        worker.work_queue.wake(len(worker.workers))
