"""Prometheus metrics with prometheus-client: this process's HTTP metrics plus the fleet.

HTTP requests are counted per process (:class:`HttpMetrics`). The fleet's
figures (job counters and latency buckets kept in Redis by the workers, queues, worker
heartbeats) are read by the ``/metrics`` handler and turned into metric families here,
so any web process exposes the same fleet-wide values.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from workers.events import LATENCY_BUCKETS, JobFigures

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    """Request counts by method, route and status; latency histograms by route.

    Counted in plain dicts and turned into prometheus-client's metric families when
    ``/metrics`` is read: a ``Counter`` and a ``Histogram`` take a lock and update two
    or three values on every call (3 us a request, a twentieth of a waiting-room poll),
    and every request of a web process is observed on its one event-loop thread.
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, list[float]] = {}  # route -> [per bucket, +Inf, sum]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request."""
        if method not in METHODS:  # (a client may send any token as a method)
            method = "OTHER"
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        buckets = self._latency.get(route)
        if buckets is None:
            buckets = self._latency[route] = [0] * (len(HTTP_BUCKETS) + 2)
        buckets[bisect_left(HTTP_BUCKETS, seconds)] += 1  # (a bound holds what equals it)
        buckets[-1] += seconds

    def families(self) -> list[Metric]:
        """This process's HTTP metrics, as prometheus-client's families."""
        requests = CounterMetricFamily("bazaar_http_requests",
                                       "HTTP requests by method, route and status.",
                                       labels=["method", "route", "status"])
        for (method, route, status), n in sorted(self._requests.items()):
            requests.add_metric([method, route, str(status)], n)
        duration = HistogramMetricFamily("bazaar_http_request_duration_seconds",
                                         "HTTP request latency by route.", labels=["route"])
        bounds = [*map(str, HTTP_BUCKETS), "+Inf"]
        for route, counts in sorted(self._latency.items()):
            cumulative = list(accumulate(counts[:-1]))
            duration.add_metric([route], list(zip(bounds, cumulative, strict=True)),
                                counts[-1])
        return [requests, duration]


class Families(Collector):
    """A collector of metric families built beforehand (after the async reads)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        """The families, as built."""
        return self.families


def stalled(oldest_age: float, last_finish: float | None, now: float,
            threshold: float) -> bool:
    """A queue is stalled when its oldest ready message has waited longer than
    ``threshold`` seconds and no job reached a terminal state within that time."""
    idle = last_finish is None or now - last_finish > threshold
    return oldest_age > threshold and idle


def job_families(figures: JobFigures) -> list[Metric]:
    """The worker-kept job counters and submit-to-terminal latency histograms."""
    jobs = CounterMetricFamily("bazaar_jobs", "Jobs finished, by type and outcome.",
                               labels=["type", "outcome"])
    for field, n in sorted(figures.counters.items()):
        job_type, _, outcome = field.rpartition("|")
        jobs.add_metric([job_type, outcome], float(n))
    latency = HistogramMetricFamily("bazaar_job_latency_seconds",
                                    "Submit-to-terminal time of jobs, by type.", labels=["type"])
    bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
    for job_type in sorted({f.rpartition("|")[0] for f in figures.latency}):
        running, buckets = 0, []
        for le in bounds:  # stored per bucket; exposed cumulative
            running += int(figures.latency.get(f"{job_type}|{le}", 0))
            buckets.append((le, running))
        latency.add_metric([job_type], buckets,
                           float(figures.latency.get(f"{job_type}|sum", 0)))
    return [jobs, latency]


def queue_families(queues: list[dict], last_finish: float | None, now: float,
                   stall_seconds: float) -> list[Metric]:
    """Per queue: ready depth, delayed, dead letters, oldest ready age, stalled or not."""
    gauges = {
        "depth": GaugeMetricFamily("bazaar_queue_depth",
                                   "Ready messages waiting for a worker, by queue.",
                                   labels=["queue"]),
        "delayed": GaugeMetricFamily("bazaar_queue_delayed",
                                     "Delayed messages (retries, later runs), by queue.",
                                     labels=["queue"]),
        "dead": GaugeMetricFamily("bazaar_dead_letters",
                                  "Messages dead-lettered by the broker, by queue.",
                                  labels=["queue"]),
        "oldest_age_seconds": GaugeMetricFamily(
            "bazaar_queue_oldest_ready_age_seconds",
            "Seconds since the oldest ready message of the queue was sent (0 when empty).",
            labels=["queue"]),
    }
    stall = GaugeMetricFamily(
        "bazaar_queue_stalled",
        f"1 when the oldest ready message waited over {stall_seconds:g} s and no job "
        "finished within that time, else 0.", labels=["queue"])
    for queue in queues:
        for field, gauge in gauges.items():
            gauge.add_metric([queue["name"]], queue[field])
        is_stalled = stalled(queue["oldest_age_seconds"], last_finish, now, stall_seconds)
        stall.add_metric([queue["name"]], int(is_stalled))
    return [*gauges.values(), stall]


def worker_families(workers: list[dict]) -> list[Metric]:
    """Live worker processes and the age of each one's last heartbeat."""
    count = GaugeMetricFamily("bazaar_workers", "Live worker processes.",
                              value=len(workers))
    age = GaugeMetricFamily("bazaar_worker_heartbeat_age_seconds",
                            "Seconds since the worker process last beat.", labels=["worker"])
    for worker in workers:
        age.add_metric([worker["id"]], worker["heartbeat_age_seconds"])
    return [count, age]


def exposition(http: HttpMetrics, families: Iterable[Metric]) -> bytes:
    """The Prometheus text of this process's HTTP metrics and the fleet's families."""
    return generate_latest(Families([*http.families(), *families]))


HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Time and count every request by its route template."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[HTTP_METRICS].observe(
            request.method, route, status, time.perf_counter() - started
        )
