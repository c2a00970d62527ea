"""What workers tell the rest of the system through Redis, after a commit.

Live events go out on ``{prefix}:live:{topic}``, those of one topic that leave together
in one message; every web process's hub listens to them all with one pattern
subscription. Job outcomes are counted here too (``/metrics``
reads the counters, the latency buckets and the time a job last finished), in the same
round trip as the publish.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec
import redis

from jobs.platform import REGISTRY, Event

log = logging.getLogger(__name__)
LINGER = 0.001  # seconds a notice waits at least, for others to share its round trip
FLUSH_INTERVAL = 0.010  # and no batch leaves sooner than this after the one before
TERMINAL_OUTCOMES = frozenset({"succeeded", "failed"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_encode = msgspec.json.Encoder().encode


def live_channel(prefix: str, topic: str) -> str:
    """The pub/sub channel of a live topic."""
    return f"{prefix}:live:{topic}"


def live_pattern(prefix: str) -> str:
    """The pattern that matches every live channel."""
    return f"{prefix}:live:*"


def encode_event(event: Event) -> bytes:
    """An event as it travels on pub/sub: ``{"key", "id", "data"}``."""
    return _encode({"key": event.key, "id": event.id, "data": event.data})


def encode_events(events: list[Event]) -> bytes:
    """Events of one topic as they travel in one pub/sub message: a JSON array of what
    :func:`encode_event` makes, in order (the hub takes either)."""
    return _encode([{"key": e.key, "id": e.id, "data": e.data} for e in events])


def counters_key(prefix: str) -> str:
    """Hash of ``type|outcome`` -> count."""
    return f"{prefix}:metrics:jobs"


def latency_key(prefix: str) -> str:
    """Hash of ``type|le`` -> jobs whose submit-to-terminal time fell in that bucket.

    Buckets are stored non-cumulative (one increment per job); ``/metrics`` sums them.
    """
    return f"{prefix}:metrics:job_latency"


def last_finish_key(prefix: str) -> str:
    """Unix time at which a worker last brought a job to a terminal state."""
    return f"{prefix}:metrics:last_finish"


def deliveries_key(prefix: str) -> str:
    """Hash of job id -> deliveries of its message so far (a field lives until the job is
    terminal)."""
    return f"{prefix}:deliveries"


# One call for a batch of notices. KEYS: the counters, the latency buckets, the last
# finish, the deliveries. ARGV: the last finish time ("" if none); the counter, bucket
# and latency-sum increments (each a count, then field/amount pairs); the finished job
# ids (a count, then the ids); then channel/message pairs to publish, in order.
_NOTIFY = """
if ARGV[1] ~= "" then redis.call("SET", KEYS[3], ARGV[1]) end
local i = 2
for _, command in ipairs({{"HINCRBY", 1}, {"HINCRBY", 2}, {"HINCRBYFLOAT", 2}}) do
  local n = tonumber(ARGV[i])
  for j = i + 1, i + 2 * n, 2 do
    redis.call(command[1], KEYS[command[2]], ARGV[j], ARGV[j + 1])
  end
  i = i + 1 + 2 * n
end
local n = tonumber(ARGV[i])
for j = i + 1, i + n, 1000 do  -- (unpack's stack is limited: a thousand at a time)
  redis.call("HDEL", KEYS[4], unpack(ARGV, j, math.min(j + 999, i + n)))
end
for j = i + 1 + n, #ARGV, 2 do
  redis.call("PUBLISH", ARGV[j], ARGV[j + 1])
end
"""


class _Batch:
    """What some jobs' after-commit notices add up to: one pipeline sends it all."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()  # type|outcome
        self.latency: Counter[str] = Counter()  # type|le
        self.seconds: Counter[str] = Counter()  # type|sum
        self.finished: list[str] = []  # job ids now terminal
        self.last_finish: float | None = None


class Publisher:
    """Publishes committed events and counts job outcomes.

    Synchronously by default: one pipeline per call. A worker process calls
    :meth:`start`: from then on, calls only queue their notices, and one thread sends
    whatever has queued up in one pipeline (a burst of jobs shares one round trip and
    one counter increment per job type, and no job thread waits on it).
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._batch = _Batch()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify = client.register_script(_NOTIFY)
        self._keys = [counters_key(prefix), latency_key(prefix), last_finish_key(prefix),
                      deliveries_key(prefix)]

    def count_delivery(self, job_id: str) -> int:
        """Count one more delivery of a job's message; the count so far.

        Counted here, before the job's transaction begins, so that a delivery that kills
        its worker (whose transaction rolls back) is still counted: a job that keeps
        doing so is given up after ``JOB_MAX_DELIVERIES``.
        """
        return int(self.client.hincrby(deliveries_key(self.prefix), job_id, 1))

    def publish(
        self,
        events: Iterable[Event],
        job_type: str | None = None,
        outcome: str | None = None,
        latency: float | None = None,
        job_id: str | None = None,
    ) -> None:
        """Publish the live ``events``; count a job's ``outcome`` and latency if given,
        and forget the deliveries of a job that is now terminal."""
        with self._lock:
            batch = self._batch
            batch.events += [e for e in events if e.topic in REGISTRY.live_topics]
            if job_type is not None:
                batch.counts[f"{job_type}|{outcome}"] += 1
                if outcome in TERMINAL_OUTCOMES:
                    batch.last_finish = time.time()
            if latency is not None:
                le = next((str(b) for b in LATENCY_BUCKETS if latency <= b), "+Inf")
                batch.latency[f"{job_type}|{le}"] += 1
                batch.seconds[f"{job_type}|sum"] += latency
            if job_id is not None:
                batch.finished.append(job_id)
        if self._thread is None:
            self.flush()
        elif not self._wake.is_set():  # (setting it takes its lock and wakes the thread)
            self._wake.set()

    def start(self) -> None:
        """Send notices from a thread of their own, batched (see the class notes)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        last = 0.0
        while True:
            self._wake.wait()
            # Let a burst gather: a quiet process sends a notice a millisecond after its
            # commit, a busy one a batch every 10 ms (each call costs a few hundred
            # microseconds of the workers' CPU, whatever it carries).
            time.sleep(max(LINGER, last + FLUSH_INTERVAL - time.monotonic()))
            self._wake.clear()
            last = time.monotonic()
            try:
                self.flush()
            except Exception as e:  # committed work; a lost notice only delays watchers
                log.warning("could not publish job events", extra={"reason": repr(e)})

    def flush(self) -> None:
        """Send what has queued up, in one script call."""
        with self._lock:
            batch, self._batch = self._batch, _Batch()
        by_topic: dict[str, list[Event]] = {}
        for event in batch.events:
            by_topic.setdefault(event.topic, []).append(event)
        args: list[Any] = ["" if batch.last_finish is None else repr(batch.last_finish)]
        for section in (batch.counts, batch.latency, batch.seconds):
            args.append(len(section))
            for field, n in section.items():
                args += (field, n)
        args.append(len(batch.finished))
        args += batch.finished
        for topic, events in by_topic.items():  # one message per topic, events in order
            args += (live_channel(self.prefix, topic), encode_events(events))
        if len(args) > 5:  # (anything at all to say)
            self._notify(keys=self._keys, args=args)


def _text(mapping: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in mapping.items()
    }


class JobFigures(NamedTuple):
    """What ``/metrics`` reads of the workers' job figures."""

    counters: dict[str, str]  # type|outcome -> count
    latency: dict[str, str]  # type|bucket -> count, and type|sum -> seconds
    last_finish: float | None  # unix time a job last reached a terminal state


class JobMetrics:
    """The job counters and latency buckets, read by ``/metrics`` (asyncio client)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def count_refused(self, counts: dict[str, int]) -> None:
        """Count jobs refused at the door (they never reach a worker), by type."""
        pipe = self.client.pipeline(transaction=False)
        for job_type, n in counts.items():
            pipe.hincrby(counters_key(self.prefix), f"{job_type}|failed", n)
        await pipe.execute()

    async def read(self) -> JobFigures:
        """The counters, latency buckets and last finish time, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(counters_key(self.prefix))
        pipe.hgetall(latency_key(self.prefix))
        pipe.get(last_finish_key(self.prefix))
        counters, latency, last = await pipe.execute()
        return JobFigures(_text(counters), _text(latency),
                          None if last is None else float(last))
