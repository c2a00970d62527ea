"""The platform's own routes: jobs, their live stream, health, readiness, metrics, and
the operator console's JSON (``web.views.admin``)."""

from __future__ import annotations

import msgspec

from web.routing import Query, Route
from web.shapes import JobBody, Page
from web.validation import PAGING
from web.views import admin, console, jobs, ops


class Health(msgspec.Struct):
    """The process is up (and, for readiness, its dependencies answer)."""

    status: str
    checks: dict[str, str] | None = None


ROUTES = [
    Route("GET", "/jobs", jobs.list_jobs, "The caller's jobs, newest first",
          response=Page[JobBody],
          query=(Query("status", str, "queued, running, succeeded or failed"),
                 Query("type", str, "a job type"), *PAGING)),
    Route("GET", "/jobs/events", jobs.job_events,
          "Live stream of the caller's job status changes (event: job)",
          content_type="text/event-stream", headers=("Last-Event-ID",),
          query=(Query("access_token", str, "for EventSource, instead of the header"),)),
    Route("GET", "/jobs/{job_id}", jobs.get_job, "One job (?wait=N long-polls)",
          response=JobBody, errors=("JOB_NOT_FOUND",),
          query=(Query("wait", int, "0..30 seconds to hold until terminal"),)),
    *[Route("GET", f"{base}/healthz", ops.healthz, "The process is up", response=Health,
            auth="none", root=True) for base in ("", "/api/v1")],
    *[Route("GET", f"{base}/readyz", ops.readyz, "The database and Redis answer",
            response=Health, errors=("UNAVAILABLE",), auth="none", root=True)
      for base in ("", "/api/v1")],
    *[Route("GET", f"{base}/metrics", ops.metrics, "Prometheus metrics", auth="none",
            content_type="text/plain", root=True) for base in ("", "/api/v1")],
    *admin.ROUTES,
    *console.ROUTES,
]
