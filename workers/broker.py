"""Broker set-up and sending a recorded job as a Dramatiq message."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import dramatiq
import msgspec
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.encoder import JSONEncoder, MessageData
from dramatiq.middleware import (
    CurrentMessage,
    Retries,
    TimeLimit,
)

from db.connection import TRANSIENT_ERRORS
from db.settings import Settings
from workers.consumer import FastHandOff, JobBroker

COMMANDS_QUEUE = "commands"
SWEEPS_QUEUE = "sweeps"
QUEUES = (COMMANDS_QUEUE, SWEEPS_QUEUE)


class MessageEncoder(JSONEncoder):
    """Dramatiq's JSON message encoding, through msgspec: the same JSON (any JSON decoder
    reads it), about three times cheaper for the door that encodes every job's message
    and the consumer thread that decodes it. What msgspec will not encode or decode (a
    string with a lone surrogate, an integer past 64 bits) goes through the standard
    library."""

    _encode = msgspec.json.Encoder().encode
    _decode = msgspec.json.Decoder().decode

    def encode(self, data: MessageData) -> bytes:
        """The message as JSON bytes."""
        try:
            return self._encode(data)
        except (msgspec.EncodeError, OverflowError, UnicodeEncodeError):
            return super().encode(data)

    def decode(self, data: bytes) -> MessageData:
        """The message read back; ``DecodeError`` if it is not JSON."""
        try:
            return self._decode(data)
        except msgspec.DecodeError:  # (not JSON; or a lone surrogate's escape, which is)
            return super().decode(data)


def thread_client(url: str, threads: int) -> redis.Redis:
    """A Redis client that ``threads`` threads share, with the process's own few beside
    them (notices, heartbeats). A thread past the pool's size waits for a connection:
    redis-py 8's default pool raises ``MaxConnectionsError`` past 100 instead."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=threads + 16,
                                                 timeout=10)
    return redis.Redis(connection_pool=pool)


def dramatiq_namespace(settings: Settings) -> str:
    """The Redis key prefix of the broker's queues."""
    return f"{settings.redis_prefix}:dramatiq"


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A Redis broker (or the in-process stub when embedded), made the global broker.

    The heartbeat timeout and maintenance interval are set so that the messages of a
    killed worker come back within seconds, not the library default's many minutes.
    A message whose delivery failed because the database could not be reached is
    retried until it can be (backing off to 5 s): dead-lettering it would leave its job
    ``queued`` and marked sent, which no sweep would ever re-send.
    """
    max_retries = settings.job_max_retries

    def retry_when(retries: int, error: BaseException) -> bool:
        return isinstance(error, TRANSIENT_ERRORS) or retries < max_retries

    # Only the middleware Bazaar uses: Dramatiq's default list also has AgeLimit,
    # ShutdownNotifications, Callbacks and Pipelines, which act only on options and
    # actor flags Bazaar never sets, yet run on every message (before and after each:
    # 13 -> 5 microseconds a message).
    middleware = [
        TimeLimit(time_limit=120_000),
        Retries(min_backoff=200, max_backoff=5_000, retry_when=retry_when),
        CurrentMessage(),
        FastHandOff(),
    ]
    if settings.embedded:
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
    else:
        broker = JobBroker(
            deliveries_key=f"{settings.redis_prefix}:deliveries",
            counted_queues=(COMMANDS_QUEUE,),
            # (Dramatiq's own pool, given only the URL, would refuse its 101st connection)
            client=thread_client(settings.redis_url,
                                 max(settings.worker_threads, settings.db_pool_size)),
            namespace=dramatiq_namespace(settings),
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_interval=settings.broker_maintenance_interval,
            middleware=middleware,
        )
    for queue in QUEUES:
        broker.declare_queue(queue)
    dramatiq.set_encoder(MessageEncoder())
    dramatiq.set_broker(broker)
    return broker


# A job to send: ``(id, type)``, or ``(id, type, user_id, payload)`` to carry the job in
# its message (see ``job_message``).
Sendable = tuple[uuid.UUID | str, str] | tuple[uuid.UUID | str, str, int, dict[str, Any]]


def job_message(job_id: uuid.UUID | str, job_type: str, user_id: int | None = None,
                payload: dict[str, Any] | None = None) -> dramatiq.Message:
    """The message of a recorded job: actor ``job_type``, message id = job id.

    With ``user_id`` and ``payload`` (as recorded), the message carries the job, and the
    worker need not read the row before running it: the job's conditional finish is what
    lets only one delivery's effect commit. Without them, the worker reads the row.
    """
    args: tuple = (str(job_id),) if payload is None else (str(job_id), user_id, payload)
    return dramatiq.Message(
        queue_name=COMMANDS_QUEUE,
        actor_name=job_type,
        args=args,
        kwargs={},
        options={},
        message_id=str(job_id),
    )


def send_job(broker: dramatiq.Broker, job_id: uuid.UUID | str, job_type: str,
             *carried: Any) -> None:
    """Enqueue the message for one recorded job."""
    broker.enqueue(job_message(job_id, job_type, *carried))


def send_jobs(broker: dramatiq.Broker, jobs: list[Sendable]) -> None:
    """Enqueue the messages of many recorded jobs in one Redis round trip.

    ``RedisBroker.enqueue`` runs its ``dispatch`` script once per message (a round trip,
    and a Lua call, each). Its ``enqueue`` does two things: store the message in the
    queue's hash under a fresh redis message id, and push that id on the queue's list.
    Here a whole batch does the same in two commands inside one MULTI (the hash first,
    so no consumer can pop an id whose message is not there), and wakes idle consumers
    (``workers.consumer``). This leans on the broker's key layout (``JobBroker.enqueue_all``),
    which is why dramatiq is pinned below 3 and why the end-to-end tests consume these
    messages with real workers.
    """
    if isinstance(broker, JobBroker):
        broker.enqueue_all(COMMANDS_QUEUE, [job_message(*job) for job in jobs])
    else:
        for job in jobs:
            send_job(broker, *job)


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


class BrokerEpoch:
    """A key that lives as long as the broker's data: when Redis loses its data (it keeps
    nothing on disk), the key is gone too, and every unfinished job must be re-sent."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:broker-epoch"

    def exists(self) -> bool:
        """Whether the broker's data is the data the jobs were sent into."""
        return bool(self.client.exists(self.key))

    def renew(self, now: datetime) -> None:
        """Mark the broker's current data as known (after the re-send was recorded)."""
        self.client.set(self.key, now.isoformat())


async def queue_view(broker: dramatiq.Broker, client: Any, settings: Settings,
                     now: float) -> list[dict]:
    """Each queue's ready messages, the age of the oldest one, delayed and dead messages.

    ``[{"name", "depth", "oldest_age_seconds", "delayed", "dead"}]`` in ``QUEUES`` order:
    ``depth`` counts ready messages waiting for a worker (delayed ones and those a worker
    holds are not counted); the oldest is the head of the queue (0 when empty), aged
    from when it was sent. Read with two pipelined round trips on the asyncio ``client``
    (or from the in-process stub broker).
    """
    if isinstance(broker, StubBroker):
        return [_stub_queue_view(broker, queue, now) for queue in QUEUES]
    ns = dramatiq_namespace(settings)
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(f"{ns}:{queue}")
        pipe.lindex(f"{ns}:{queue}", 0)
        pipe.hlen(f"{ns}:{queue}.DQ.msgs")  # delayed, whether or not a worker holds them
        pipe.hlen(dead_letter_key(settings, queue))
    values = await pipe.execute()
    rows = dict(zip(QUEUES, (values[i:i + 4] for i in range(0, len(values), 4)), strict=True))
    heads = [(queue, row[1]) for queue, row in rows.items() if row[1] is not None]
    bodies: dict[str, bytes | None] = {}
    if heads:
        pipe = client.pipeline(transaction=False)
        for queue, message_id in heads:
            pipe.hget(f"{ns}:{queue}.msgs", message_id)
        bodies = dict(zip((q for q, _ in heads), await pipe.execute(), strict=True))
    return [{"name": queue, "depth": depth, "oldest_age_seconds": _age(bodies.get(queue), now),
             "delayed": delayed, "dead": dead}
            for queue, (depth, _, delayed, dead) in rows.items()]


def _stub_queue_view(broker: StubBroker, queue: str, now: float) -> dict:
    ready = broker.queues[queue]
    with ready.mutex:
        depth, head = len(ready.queue), (ready.queue[0] if ready.queue else None)
    return {"name": queue, "depth": depth, "oldest_age_seconds": _age(head, now),
            "delayed": broker.queues[dq_name(queue)].qsize(),
            "dead": len(broker.dead_letters_by_queue[queue])}


def _age(body: bytes | str | None, now: float) -> float:
    """Seconds since an encoded message was sent; 0 without one (say, acked meanwhile)."""
    if body is None:
        return 0.0
    sent = json.loads(body)["message_timestamp"] / 1000
    return round(max(0.0, now - sent), 3)


def dead_letter_key(settings: Settings, queue: str) -> str:
    """Redis hash of the dead-lettered messages of ``queue``."""
    return f"{dramatiq_namespace(settings)}:{queue}.XQ.msgs"
