"""rq-scheduler keeps the schedule in Redis; due entries leave as Dramatiq messages.

rq-scheduler would move a due entry onto an RQ queue for an RQ worker. Here
:meth:`DramatiqScheduler.enqueue_job` claims the due slot atomically (so two
schedulers can never both dispatch it), re-arms the entry from the slot (not from
``now``, so interval entries do not drift), and sends ``periodic(schedule_id, slot)``
to the Dramatiq worker pool, where ``(schedule_id, slot)`` is refused a second run.
The scheduler that last held rq-scheduler's lock names itself in ``{prefix}:scheduler:active``
for a few ticks (``scheduler.status`` reads it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import threading
import time
from datetime import UTC, datetime

import crontab
import dramatiq
import redis
from rq.job import Job as RqJob
from rq_scheduler import Scheduler

from scheduler.schedule import Entry
from workers.broker import send_periodic

log = logging.getLogger(__name__)

# Move the entry from the due slot to the next one only if no one else did.
_CLAIM = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def scheduled_jobs_key(prefix: str) -> str:
    """rq-scheduler's sorted set of RQ job ids by their next due time (unix seconds)."""
    return f"{prefix}:rq:scheduler:scheduled_jobs"


def active_key(prefix: str) -> str:
    """The name of the scheduler that dispatched last, kept for a few ticks."""
    return f"{prefix}:scheduler:active"


def next_slot(entry: Entry, after: float) -> int:
    """The first slot of ``entry`` strictly after the unix time ``after`` (whole seconds, UTC)."""
    if entry.interval:
        return (math.floor(after / entry.interval) + 1) * entry.interval
    cron = crontab.CronTab(entry.cron)
    start = datetime.fromtimestamp(math.floor(after), UTC)
    return math.floor(after) + math.ceil(cron.next(now=start, default_utc=True))


class DramatiqScheduler(Scheduler):
    """An rq-scheduler whose due jobs are sent to Dramatiq; all keys live under ``prefix``."""

    def __init__(
        self, client: redis.Redis, broker: dramatiq.Broker, prefix: str, tick: float = 1.0
    ) -> None:
        namespace = {"redis_job_namespace_prefix": f"{prefix}:rq:job:"}
        job_class = type("BazaarRqJob", (RqJob,), namespace)
        super().__init__(connection=client, interval=tick, job_class=job_class)
        self.prefix = prefix
        self.broker = broker
        self.redis_scheduler_namespace_prefix = f"{prefix}:rq:scheduler_instance:"
        self.scheduler_key = f"{prefix}:rq:scheduler"
        self.scheduler_lock_key = f"{prefix}:rq:scheduler_lock"
        self.scheduled_jobs_key = scheduled_jobs_key(prefix)
        self.dispatched_key = f"{prefix}:scheduler:dispatched"
        self.active_key = active_key(prefix)
        self.active_name = f"{socket.gethostname()}:{os.getpid()}:{self.name[:6]}"
        self._claim = client.register_script(_CLAIM)
        self._entries: dict[str, Entry] = {}

    @staticmethod
    def job_id(entry: Entry) -> str:
        """The stable RQ job id of an entry."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", entry.id)

    def register(self, entries: list[Entry]) -> None:
        """Upsert the schedule: keep the armed slot of unchanged entries, drop retired ones."""
        self._entries = {self.job_id(e): e for e in entries}
        now = time.time()
        for job_id, entry in self._entries.items():
            meta = {"schedule_id": entry.id, "interval": entry.interval, "cron": entry.cron}
            if self.connection.zscore(self.scheduled_jobs_key, job_id) is not None:
                try:
                    if self.job_class.fetch(job_id, connection=self.connection).meta == meta:
                        continue
                except Exception:  # a half-written entry is simply rewritten
                    pass
            job = self._create_job("periodic", id=job_id, meta=meta, commit=True)
            self.connection.zadd(self.scheduled_jobs_key, {job.id: next_slot(entry, now)})
        for job_id in self.connection.zrange(self.scheduled_jobs_key, 0, -1):
            job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
            if job_id not in self._entries:
                self.connection.zrem(self.scheduled_jobs_key, job_id)

    def enqueue_job(self, job: RqJob) -> None:
        """Dispatch the due slot of ``job`` to Dramatiq, once, and re-arm it from that slot."""
        entry = self._entries.get(job.id)
        score = self.connection.zscore(self.scheduled_jobs_key, job.id)
        if entry is None or score is None:
            return
        slot = int(score)
        upcoming = next_slot(entry, max(slot, time.time()))
        if not self._claim(keys=[self.scheduled_jobs_key], args=[job.id, slot, upcoming]):
            return  # another scheduler dispatched this slot
        send_periodic(self.broker, entry.id, slot)
        self.connection.hincrby(self.dispatched_key, f"{entry.id}:{slot}", 1)
        log.info("periodic dispatched", extra={"schedule_id": entry.id, "slot": slot})

    def run_until(self, stop: threading.Event, entries: list[Entry] | None = None) -> None:
        """Tick until ``stop`` is set: under rq-scheduler's lock, dispatch what is due.

        It first registers itself and the schedule (``entries``, else what ``register``
        was given). A tick that cannot reach Redis is skipped, not fatal -- at start-up
        too: the scheduler keeps ticking, and once Redis answers again it registers
        itself and the schedule anew (a restarted Redis has lost both; registering keeps
        what survived). A restart it did not see fail (between two ticks) shows as its
        own registration gone, and is met the same way.
        """
        if entries is not None:
            self._entries = {self.job_id(e): e for e in entries}
        away, joined = True, False
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if away:
                        self._rejoin()
                        if joined:
                            log.warning("scheduler reached Redis again; schedule re-registered")
                        away, joined = False, True
                    self._tick()
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    if not away:
                        log.warning("scheduler cannot reach Redis; retrying each tick",
                                    extra={"reason": repr(e)})
                    away, self._lock_acquired = True, False
                stop.wait(max(0.0, self._interval - (time.monotonic() - started)))
        finally:
            with contextlib.suppress(redis.RedisError):
                self.remove_lock()
                if self.connection.get(self.active_key) == self.active_name.encode():
                    self.connection.delete(self.active_key)
                self.register_death()

    def _tick(self) -> None:
        if not self.connection.expire(self.key, int(self._interval) + 10):  # the heartbeat
            log.warning("scheduler's registration is gone (Redis lost its data?); rejoining")
            self._rejoin()
        if self.acquire_lock():
            try:
                self.connection.set(self.active_key, self.active_name,
                                    px=int(max(3 * self._interval, 1.0) * 1000))
                self.enqueue_jobs()
            finally:
                self.remove_lock()

    def _rejoin(self) -> None:
        if not self.connection.exists(self.key):
            self.register_birth()
        self.register(list(self._entries.values()))
