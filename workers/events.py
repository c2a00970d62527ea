"""What workers tell the rest of the system through Redis, after a commit.

Live events go out on ``{prefix}:live:{topic}``; every web process's hub listens to
them all with one pattern subscription. Job outcomes are counted here too (``/metrics``
reads the counters, the latency buckets and the time a job last finished), in the same
round trip as the publish.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec
import redis

from jobs.platform import REGISTRY, Event

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


class Publisher:
    """Publishes committed events and counts job outcomes, in one round trip."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def publish(
        self,
        events: Iterable[Event],
        job_type: str | None = None,
        outcome: str | None = None,
        latency: float | None = None,
    ) -> None:
        """Publish the live ``events``; count a job's ``outcome`` and latency if given."""
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            if event.topic in REGISTRY.live_topics:
                pipe.publish(live_channel(self.prefix, event.topic), encode_event(event))
        if job_type is not None:
            pipe.hincrby(counters_key(self.prefix), f"{job_type}|{outcome}", 1)
            if outcome in TERMINAL_OUTCOMES:
                pipe.set(last_finish_key(self.prefix), repr(time.time()))
        if latency is not None:
            key = latency_key(self.prefix)
            le = next((str(b) for b in LATENCY_BUCKETS if latency <= b), "+Inf")
            pipe.hincrby(key, f"{job_type}|{le}", 1)
            pipe.hincrbyfloat(key, f"{job_type}|sum", latency)
        if len(pipe):
            pipe.execute()


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

    async def count_refused(self, job_type: str) -> None:
        """Count a job refused at the door (it never reaches a worker)."""
        await self.client.hincrby(counters_key(self.prefix), f"{job_type}|failed", 1)

    async def read(self) -> JobFigures:
        """The counters, latency buckets and last finish time, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(counters_key(self.prefix))
        pipe.hgetall(latency_key(self.prefix))
        pipe.get(last_finish_key(self.prefix))
        counters, latency, last = await pipe.execute()
        return JobFigures(_text(counters), _text(latency),
                          None if last is None else float(last))
