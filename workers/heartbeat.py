"""Worker heartbeats: each worker process says every few seconds that it lives, and what
it is running.

A :class:`Heartbeats` middleware on the broker keeps the messages in flight in a dict
(no Redis call on the job path) and, once a ``dramatiq.Worker`` boots on the broker,
starts a daemon thread that writes the process's record:

- ``{prefix}:worker:{id}``: JSON ``{id, pid, host, queues, beat, running}`` that expires
  after ``TTL_BEATS`` intervals, so a killed worker disappears on its own;
- ``{prefix}:workers``: sorted set of worker ids by their last beat, the index
  :func:`read_workers` starts from (pruned by the beats and on read).

A worker that shuts down cleanly deletes its record at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.common import q_name

log = logging.getLogger(__name__)
TTL_BEATS = 5  # a record outlives its last beat by this many intervals


def index_key(prefix: str) -> str:
    """Sorted set of live worker ids, scored by their last beat (unix time)."""
    return f"{prefix}:workers"


def record_key(prefix: str, worker_id: str) -> str:
    """The expiring JSON record of one worker process."""
    return f"{prefix}:worker:{worker_id}"


class Beat:
    """The heartbeat thread of one worker process."""

    def __init__(self, client: redis.Redis, prefix: str, interval: float,
                 queues: list[str], running: dict[str, tuple[str, float]]) -> None:
        self.client, self.prefix, self.interval = client, prefix, interval
        self.queues, self.running = queues, running
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bazaar-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        """Beat now, then every ``interval`` seconds."""
        self._thread.start()

    def stop(self, forget: bool = True) -> None:
        """Stop beating; with ``forget``, delete the record at once (else it expires)."""
        self._stop.set()
        self._thread.join(self.interval + 5)
        if forget:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(record_key(self.prefix, self.id))
            pipe.zrem(index_key(self.prefix), self.id)
            pipe.execute()

    def beat(self) -> None:
        """Write this process's record and renew its expiry, in one round trip."""
        now = time.time()
        running = [{"job_id": job_id, "type": job_type, "started": started}
                   for job_id, (job_type, started) in self.running.copy().items()]
        record = {"id": self.id, "pid": self.pid, "host": self.host, "queues": self.queues,
                  "beat": now, "running": running}
        ttl = self.interval * TTL_BEATS
        pipe = self.client.pipeline(transaction=False)
        pipe.set(record_key(self.prefix, self.id), json.dumps(record),
                 px=max(1, int(ttl * 1000)))
        pipe.zadd(index_key(self.prefix), {self.id: now})
        pipe.zremrangebyscore(index_key(self.prefix), "-inf", now - ttl)
        pipe.execute()

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # Redis away: try again next time, the record may lapse
                log.warning("heartbeat not written", exc_info=True)
            if self._stop.wait(self.interval):
                return


class Heartbeats(dramatiq.Middleware):
    """Tracks the messages in flight and beats while a worker runs on the broker."""

    def __init__(self, client: redis.Redis, prefix: str, interval: float) -> None:
        self.client, self.prefix, self.interval = client, prefix, interval
        self.running: dict[str, tuple[str, float]] = {}  # message id -> (actor, started)
        self.beats: dict[int, Beat] = {}  # by id() of the dramatiq.Worker

    def before_process_message(self, broker: dramatiq.Broker,
                               message: dramatiq.Message) -> None:
        """A job starts: note it (one dict write)."""
        self.running[message.message_id] = (message.actor_name, time.time())

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message,
                              *, result: Any = None, exception: Any = None) -> None:
        """A job ended, however it ended."""
        self.running.pop(message.message_id, None)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        """A job was skipped by a middleware."""
        self.running.pop(message.message_id, None)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start beating for the worker that just booted."""
        only = worker.consumer_whitelist
        queues = sorted(q for q in broker.get_declared_queues()
                        if q == q_name(q) and (not only or q in only))
        beat = Beat(self.client, self.prefix, self.interval, queues, self.running)
        self.beats[id(worker)] = beat
        beat.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker,
                               worker: dramatiq.Worker) -> None:
        """Stop beating and remove the record: the worker leaves on purpose."""
        beat = self.beats.pop(id(worker), None)
        if beat is not None:
            beat.stop()


async def read_workers(client: Any, prefix: str, now: float) -> list[dict]:
    """The live worker processes, by id, on an asyncio ``client``:
    ``[{"id", "pid", "host", "queues", "heartbeat_age_seconds", "running"}]`` where
    ``running`` is ``[{"job_id", "type", "seconds"}]``."""
    ids = await client.zrange(index_key(prefix), 0, -1)
    if not ids:
        return []
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    records = await client.mget([record_key(prefix, i) for i in ids])
    gone = [i for i, raw in zip(ids, records, strict=True) if raw is None]
    if gone:
        await client.zrem(index_key(prefix), *gone)
    workers = []
    for raw in filter(None, records):
        record = json.loads(raw)
        workers.append({
            "id": record["id"], "pid": record["pid"], "host": record["host"],
            "queues": record["queues"],
            "heartbeat_age_seconds": round(max(0.0, now - record["beat"]), 3),
            "running": [{"job_id": r["job_id"], "type": r["type"],
                         "seconds": round(max(0.0, now - r["started"]), 3)}
                        for r in record["running"]],
        })
    return sorted(workers, key=lambda w: w["id"])
