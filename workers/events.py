"""What workers tell the rest of the system through Redis: job outcomes and job metrics.

Web processes subscribe to :func:`done_channel` to wake long-polls; ``/metrics`` reads
the counters and latency buckets kept here, so worker metrics need no scrape endpoint.
"""

from __future__ import annotations

import redis

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def done_channel(prefix: str) -> str:
    """Pub/sub channel carrying the id of every job that turned terminal."""
    return f"{prefix}:jobs:done"


def counters_key(prefix: str) -> str:
    """Hash of ``type|outcome`` -> count."""
    return f"{prefix}:metrics:jobs"


def latency_key(prefix: str) -> str:
    """Hash of ``type|le`` -> jobs whose submit-to-terminal time fell in that bucket.

    Buckets are stored non-cumulative (one increment per job); ``/metrics`` sums them.
    """
    return f"{prefix}:metrics:job_latency"


class JobEvents:
    """Publishes job outcomes and counts them, in one round trip per job."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def finished(self, job_id: str, job_type: str, outcome: str, latency: float | None) -> None:
        """Announce that ``job_id`` is terminal with ``outcome`` (succeeded, failed, skipped)."""
        pipe = self.client.pipeline(transaction=False)
        if outcome != "skipped":
            pipe.publish(done_channel(self.prefix), job_id)
        pipe.hincrby(counters_key(self.prefix), f"{job_type}|{outcome}", 1)
        if latency is not None:
            key = latency_key(self.prefix)
            le = next((str(b) for b in LATENCY_BUCKETS if latency <= b), "+Inf")
            pipe.hincrby(key, f"{job_type}|{le}", 1)
            pipe.hincrbyfloat(key, f"{job_type}|sum", latency)
        pipe.execute()
