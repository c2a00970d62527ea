"""Prometheus text exposition: this process's HTTP metrics plus fleet-wide job metrics.

Job counters and latency buckets are kept in Redis by the workers (``workers.events``),
so any web process can expose them; queue depths are read from the broker.
"""

from __future__ import annotations

import time
from collections import defaultdict

from aiohttp import web

from workers.events import LATENCY_BUCKETS

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class HttpMetrics:
    """Request counts by method, route and status; latency histograms by route."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(HTTP_BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request."""
        self.requests[(method, route, status)] += 1
        index = next((i for i, le in enumerate(HTTP_BUCKETS) if seconds <= le), len(HTTP_BUCKETS))
        self.buckets[route][index] += 1
        self.sums[route] += seconds

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = [
            "# HELP bazaar_http_requests_total HTTP requests by method, route and status.",
            "# TYPE bazaar_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(
                f'bazaar_http_requests_total{{method="{method}",route="{route}",'
                f'status="{status}"}} {n}'
            )
        lines += [
            "# HELP bazaar_http_request_duration_seconds HTTP request latency by route.",
            "# TYPE bazaar_http_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self.buckets.items()):
            lines += histogram_lines(
                "bazaar_http_request_duration_seconds", f'route="{route}"',
                [*map(str, HTTP_BUCKETS), "+Inf"], counts, self.sums[route],
            )
        return lines


def histogram_lines(
    name: str, labels: str, bounds: list[str], counts: list[int], total: float
) -> list[str]:
    """Cumulative ``_bucket`` lines plus ``_sum`` and ``_count`` from per-bucket counts."""
    lines, running = [], 0
    for le, n in zip(bounds, counts, strict=True):
        running += n
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
    lines.append(f"{name}_sum{{{labels}}} {total:.6f}")
    lines.append(f"{name}_count{{{labels}}} {running}")
    return lines


def job_lines(counters: dict[str, str], latency: dict[str, str]) -> list[str]:
    """Exposition of the worker-kept job counters and submit-to-terminal latency."""
    lines = [
        "# HELP bazaar_jobs_total Jobs finished, by type and outcome.",
        "# TYPE bazaar_jobs_total counter",
    ]
    for field, n in sorted(counters.items()):
        job_type, _, outcome = field.rpartition("|")
        lines.append(f'bazaar_jobs_total{{type="{job_type}",outcome="{outcome}"}} {n}')
    lines += [
        "# HELP bazaar_job_latency_seconds Submit-to-terminal time of jobs, by type.",
        "# TYPE bazaar_job_latency_seconds histogram",
    ]
    bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
    types = sorted({f.rpartition("|")[0] for f in latency})
    for job_type in types:
        counts = [int(latency.get(f"{job_type}|{le}", 0)) for le in bounds]
        total = float(latency.get(f"{job_type}|sum", 0))
        lines += histogram_lines("bazaar_job_latency_seconds", f'type="{job_type}"', bounds,
                                 counts, total)
    return lines


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
