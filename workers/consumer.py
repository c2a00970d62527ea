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
  instead of on a random share of calls, and also renews this worker's heartbeat while
  its window is full.

It keeps Dramatiq's key layout (the queue list, its ``.msgs`` hash, the per-worker ack
sets, the heartbeats), which is why dramatiq is pinned below 3, and why the end-to-end
tests run these messages through real worker processes. Every message sent through
:class:`JobBroker` has a Redis id ``<message id>.<random>``, so the fetch script can tell
the job from the id without decoding the body.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff, current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

DELIVERIES = "bazaar_deliveries"  # message option: this delivery's number (counted ones)

# KEYS: the queue's list, its bodies hash, this worker's ack set for it, the heartbeats,
# the deliveries hash. ARGV: now (ms), worker id, how many to fetch, whether to count
# deliveries ("1" or "0"), then the Redis ids to acknowledge. Returns body/count pairs.
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


def wake_channel(namespace: str, queue_name: str) -> str:
    """The channel on which a sending tells idle consumers of ``queue_name`` to fetch."""
    return f"{namespace}:{queue_name}.wake"


def redis_message_id(message_id: str) -> str:
    """A fresh Redis id for one sending of ``message_id`` (a job is sent again by the
    re-send sweep, and retried, each time under a new id)."""
    return f"{message_id}.{os.urandom(6).hex()}"


class JobBroker(RedisBroker):
    """Dramatiq's Redis broker with the consumer described above.

    ``deliveries_key`` is the hash of job id -> deliveries; ``counted_queues`` are the
    queues whose messages are jobs (their message id is the job id);
    ``maintenance_interval`` is the seconds between two maintenance runs of a queue.
    """

    def __init__(self, *, deliveries_key: str, counted_queues: Iterable[str],
                 maintenance_interval: float = 1.0, **options):
        super().__init__(**options)
        self.maintenance_interval = maintenance_interval
        self.deliveries_key = deliveries_key
        self.counted_queues = frozenset(counted_queues)
        self.fetch_script = self.client.register_script(_FETCH)
        self.requeue_script = self.client.register_script(_REQUEUE)
        self._leftovers: dict[str, tuple[deque[str], deque[str]]] = {}
        self._lock = threading.Lock()

    @property
    def consumer_class(self):
        """The batching consumer."""
        return _JobConsumer

    def leftovers(self, queue_name: str) -> tuple[deque[str], deque[str]]:
        """The Redis ids of ``queue_name``'s messages to acknowledge, and those to put
        back, not yet sent: they outlive a consumer that lost its connection, so that its
        successor sends them (else they would sit in this live worker's ack set)."""
        with self._lock:
            return self._leftovers.setdefault(queue_name, (deque(), deque()))

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue ``message`` (after ``delay`` ms) under a Redis id that names it."""
        queue_name = message.queue_name
        options: dict = {"redis_message_id": redis_message_id(message.message_id)}
        if delay is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = current_millis() + delay
        message = message.copy(queue_name=queue_name, options=options)
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, options["redis_message_id"], message.encode())
        self.client.publish(wake_channel(self.namespace, queue_name), "")
        self.emit_after("enqueue", message, delay)
        return message

    def _should_do_maintenance(self, command: str) -> int:
        # Only when a consumer asks for it (``do_maintain``), on its clock.
        return int(command == "maintain")


class _JobConsumer(Consumer):
    """One queue's consumer in one worker process (see the module notes)."""

    def __init__(self, broker: JobBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.batch = max(1, prefetch // int(os.environ.get("XDIV", "2")))
        self.timeout = timeout
        self.count = "1" if queue_name in broker.counted_queues else "0"
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{queue_name}"
        queue = f"{broker.namespace}:{queue_name}"
        heartbeats = f"{broker.namespace}:__heartbeats__"
        self.fetch_keys = [queue, f"{queue}.msgs", acks, heartbeats, broker.deliveries_key]
        self.requeue_keys = [queue, f"{queue}.msgs", acks, broker.deliveries_key]
        self.cache: deque[tuple[bytes, int]] = deque()
        self.held: set[str] = set()  # message ids handed out and not yet acknowledged
        self.acks, self.unrun = broker.leftovers(queue_name)
        self.room = threading.Event()  # set when the window has room for a batch
        self.wake_channel = wake_channel(broker.namespace, queue_name)
        self.wakes: redis.client.PubSub | None = None  # subscribed once first idle
        self.misses = 0
        self.maintained = 0.0

    @property
    def outstanding_message_count(self) -> int:
        """Messages fetched and not yet acknowledged."""
        return len(self.held) + len(self.cache)

    def ack(self, message: MessageProxy) -> None:
        """Queue the acknowledgement (called by the worker thread that ran it)."""
        self.acks.append(message.options["redis_message_id"])
        self.held.discard(message.message_id)
        if len(self.held) <= self.prefetch - self.batch:
            self.room.set()

    def nack(self, message: MessageProxy) -> None:
        """Move the message to the dead-letter queue (rare: sent at once)."""
        try:
            self._fetch(0)  # (the acknowledgements queued before it)
            self.broker.do_nack(self.queue_name, message.options["redis_message_id"])
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
        finally:
            self.held.discard(message.message_id)
            self.room.set()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Put fetched messages that were not run back on their queue."""
        self.unrun.extend(message.options["redis_message_id"] for message in messages)
        try:
            self._fetch(0)  # (puts them back, and sends the queued acknowledgements)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def close(self) -> None:
        """Send the queued acknowledgements and put back what was fetched and not run
        (what cannot be sent now, the next consumer of this queue sends)."""
        self.unrun.extend(Message.decode(body).options["redis_message_id"]
                          for body, _ in self.cache)
        self.cache.clear()
        with contextlib.suppress(redis.RedisError):  # (the next consumer sends them)
            self._fetch(0)
        if self.wakes is not None:
            self.wakes.close()

    def __next__(self) -> MessageProxy | None:
        try:
            self._maintain()
            if not self.cache:
                room = self.prefetch - len(self.held)
                if room < self.batch:  # wait for the window to free a batch
                    self.room.clear()
                    if self.prefetch - len(self.held) < self.batch:
                        self.room.wait(self.timeout / 1000)
                    return None
                self._fetch(room)
            if self.cache:
                self.misses = 0
                body, deliveries = self.cache.popleft()
                message = Message.decode(body)
                if deliveries:
                    message.options[DELIVERIES] = deliveries
                else:  # (a retried message's body still holds its first count)
                    message.options.pop(DELIVERIES, None)
                self.held.add(message.message_id)
                return MessageProxy(message)
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            self._idle(backoff_ms / 1000)
            return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _fetch(self, n: int) -> None:
        """Put back what is to be put back; acknowledge what has queued and fetch up to
        ``n`` messages, in one call."""
        if self.unrun:
            self._put_back()
        acks = _take(self.acks)
        try:
            reply = self.broker.fetch_script(
                keys=self.fetch_keys,
                args=[current_millis(), self.broker.broker_id, n, self.count, *acks])
        except redis.RedisError:
            self.acks.extendleft(reversed(acks))  # (their successor sends them)
            raise
        self.cache.extend(zip(reply[::2], reply[1::2], strict=True))

    def _put_back(self) -> None:
        ids = _take(self.unrun)
        if ids:
            try:
                self.broker.requeue_script(keys=self.requeue_keys, args=[self.count, *ids])
            except redis.RedisError:
                self.unrun.extendleft(reversed(ids))
                raise

    def _idle(self, seconds: float) -> None:
        """Wait ``seconds``, or until a sending wakes this queue's consumers."""
        if self.wakes is None:
            self.wakes = self.broker.client.pubsub(ignore_subscribe_messages=True)
            self.wakes.subscribe(self.wake_channel)
        woken = self.wakes.get_message(timeout=seconds)
        while woken is not None:  # (one fetch answers every wake-up so far)
            woken = self.wakes.get_message(timeout=0)

    def _maintain(self) -> None:
        now = time.monotonic()
        if now - self.maintained >= self.broker.maintenance_interval:
            self.maintained = now
            self.broker.do_maintain(self.queue_name)


def _take(ids: deque[str]) -> list[str]:
    """Everything in ``ids`` (which other threads append to), taken out."""
    taken = []
    try:
        while True:
            taken.append(ids.popleft())
    except IndexError:
        return taken
