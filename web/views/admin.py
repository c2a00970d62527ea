"""``/admin/...``: the JSON behind the operator console (admin token; 403 for anyone else).

Queues and workers are read from Redis (the broker's lists, the workers' heartbeats);
everything else from PostgreSQL, so the history survives restarts.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import msgspec
from aiohttp import web

from jobs import admin, outbox
from jobs.clock import from_unix, iso
from jobs.errors import InvalidRequest
from jobs.fields import Text
from scheduler.schedule import schedule_table
from scheduler.status import schedule_status
from web.auth import require_admin
from web.commands import DB, GATEWAY
from web.responses import json_response
from web.routing import Query, Route
from web.shapes import Items, JobBody, Page
from web.validation import PAGING, page_params, path_id, query_choice, query_int
from web.views.jobs import STATUSES
from web.views.ops import REDIS, fleet_queues, fleet_workers
from web.views.users import SETTINGS
from workers.broker import send_jobs

log = logging.getLogger(__name__)
OUTBOX_STATUSES = {outbox.PENDING, outbox.DELIVERED, outbox.DEAD}
MAX_SEARCH = 200


class QueueBody(msgspec.Struct):
    """A broker queue: ready messages, the age of the oldest, delayed and dead ones."""

    name: str
    depth: int
    oldest_age_seconds: float
    delayed: int
    dead: int


class TypeStats(msgspec.Struct):
    """One job type over the window: outcomes, rate, and submit-to-terminal latency."""

    type: str
    succeeded: int
    failed: int
    per_second: float
    failure_ratio: float
    p50_ms: float | None
    p95_ms: float | None


class Stats(msgspec.Struct):
    """Per job type over the last ``window`` seconds."""

    window: int
    items: list[TypeStats]


class AdminJob(JobBody):
    """A job with its owner, payload and replay links."""

    user_id: int
    payload: dict[str, Any]
    replay_of: str | None
    replayed_by: str | None
    replayable: bool


_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
JobType = Text(1, 64, _TYPE.pattern, "a job type")
Code = Text(1, 64, _CODE.pattern, "a reason code")
Search = Text(1, MAX_SEARCH, None, "text in the type, payload or error, or a job id")


class ReplayFilter(msgspec.Struct, forbid_unknown_fields=True):
    """Which failed jobs to replay: by type, reason code and text (as the list's ``q``);
    an omitted filter matches any."""

    type: JobType | None = None
    code: Code | None = None
    q: Search | None = None


class Replayed(msgspec.Struct):
    """How many jobs were replayed."""

    replayed: int


class OutboxBody(msgspec.Struct):
    """An event for the data platform, with its delivery attempts."""

    id: int
    topic: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None


class WorkerJob(msgspec.Struct):
    """A job a worker is running now."""

    job_id: str
    type: str
    seconds: float


class WorkerBody(msgspec.Struct):
    """A worker process, by its last heartbeat."""

    id: str
    pid: int
    host: str
    queues: list[str]
    heartbeat_age_seconds: float
    running: list[WorkerJob]


class ScheduleBody(msgspec.Struct):
    """A periodic task: how often, when it last ran, when it is next due."""

    id: str
    every: str
    last_run_at: str | None
    next_due_at: str | None


class Schedules(msgspec.Struct):
    """The schedule, and the scheduler process dispatching it now (None: none is)."""

    active: str | None
    items: list[ScheduleBody]


def _sender(request: web.Request):
    broker = request.app[GATEWAY].broker
    return lambda pairs: send_jobs(broker, pairs)


def _now(request: web.Request):
    return request.app[GATEWAY].clock.now()


async def queues(request: web.Request) -> web.Response:
    """``GET /admin/queues``."""
    await require_admin(request)
    return json_response({"items": await fleet_queues(request.app, time.time())})


async def stats(request: web.Request) -> web.Response:
    """``GET /admin/stats?window=``: per job type, over the last ``window`` seconds."""
    await require_admin(request)
    window = query_int(request.query.get("window", "300"), "window", 1, admin.MAX_WINDOW)
    items = await request.app[DB](admin.stats, window, _now(request))
    return json_response({"window": window, "items": items})


def _match(request: web.Request, name: str, pattern: re.Pattern) -> str | None:
    value = request.query.get(name) or None
    if value is not None and not pattern.fullmatch(value):
        raise InvalidRequest({name: f"must match {pattern.pattern}"})
    return value


async def jobs(request: web.Request) -> web.Response:
    """``GET /admin/jobs?status=&type=&code=&q=&limit=&cursor=``: every user's jobs."""
    await require_admin(request)
    status = query_choice(request, "status", STATUSES)
    job_type = _match(request, "type", _TYPE)
    code = _match(request, "code", _CODE)
    text = request.query.get("q") or None
    if text is not None and len(text) > MAX_SEARCH:
        raise InvalidRequest({"q": f"must be at most {MAX_SEARCH} characters"})
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](admin.list_jobs, status, job_type, code, text,
                                               limit, cursor))


async def replay_job(request: web.Request) -> web.Response:
    """``POST /admin/jobs/{job_id}/replay``: a new job from a failed one, once."""
    user_id = await require_admin(request)
    job_id, send = request.match_info["job_id"], _sender(request)

    def replay():
        job = admin.replay_job(job_id, _now(request))
        try:
            admin.send_recorded(job, send)
        except Exception:  # recorded: the re-send sweep sends it
            log.warning("replay recorded, not sent yet", exc_info=True,
                        extra={"job_id": str(job.id)})
        return job

    job = await request.app[DB](replay)
    log.info("job replayed", extra={"job_id": str(job.id), "replay_of": job_id,
                                    "user_id": user_id})
    return json_response(admin.admin_view(job), status=202)


async def replay_jobs(request: web.Request, body: ReplayFilter) -> web.Response:
    """``POST /admin/jobs/replay``: replay every matching replayable job."""
    send, now = _sender(request), _now(request)
    replayed = await request.app[DB](admin.replay_matching, body.type, body.code, now, send,
                                     text=body.q)
    log.info("jobs replayed", extra={"job_type": body.type, "reason": body.code,
                                     "replayed": replayed})
    return json_response({"replayed": replayed}, status=202)


async def outbox_events(request: web.Request) -> web.Response:
    """``GET /admin/outbox?status=``: outbox events, newest first."""
    await require_admin(request)
    status = query_choice(request, "status", OUTBOX_STATUSES)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](admin.list_outbox, status, limit, cursor))


async def replay_event(request: web.Request) -> web.Response:
    """``POST /admin/outbox/{event_id}/replay``: a DEAD event is delivered again."""
    await require_admin(request)
    event_id = path_id(request, "event_id", "OUTBOX_EVENT_NOT_FOUND")
    event = await request.app[DB](admin.replay_event, event_id, _now(request))
    log.info("outbox event replayed", extra={"event_id": event_id})
    return json_response(event, status=202)


async def workers(request: web.Request) -> web.Response:
    """``GET /admin/workers``: worker processes by heartbeat, with their running jobs."""
    await require_admin(request)
    return json_response({"items": await fleet_workers(request.app, time.time())})


async def schedules(request: web.Request) -> web.Response:
    """``GET /admin/schedules``: each periodic task's last run and next due time."""
    await require_admin(request)
    settings = request.app[SETTINGS]
    status = await schedule_status(request.app[REDIS], settings.redis_prefix, settings)
    last = await request.app[DB](admin.last_runs)
    return json_response({"active": status["active"],
                          "items": schedule_view(settings, last, status["next_due"])})


def schedule_view(settings, last_runs: dict, next_due: dict[str, float]) -> list[dict]:
    """Each periodic task of this deployment with its last run and next due time."""
    return [{"id": entry.id,
             "every": f"{entry.interval}s" if entry.interval else entry.cron,
             "last_run_at": iso(last_runs.get(entry.id)),
             "next_due_at": (None if entry.id not in next_due else iso(
                 from_unix(next_due[entry.id])))}
            for entry in schedule_table(settings)]


ADMIN = ("INVALID_PERMISSION",)
ROUTES = [
    Route("GET", "/admin/queues", queues, "Broker queues: depth and oldest ready age",
          response=Items[QueueBody], errors=ADMIN, auth="admin"),
    Route("GET", "/admin/stats", stats, "Per job type: rates, failures, latency",
          response=Stats, errors=ADMIN, auth="admin",
          query=(Query("window", int, f"seconds, 1..{admin.MAX_WINDOW}, default 300"),)),
    Route("GET", "/admin/jobs", jobs, "Every user's jobs, newest first", response=Page[AdminJob],
          errors=ADMIN, auth="admin",
          query=(Query("status", str, "queued, running, succeeded or failed"),
                 Query("type", str, "a job type"), Query("code", str, "a failure's reason code"),
                 Query("q", str, "text in the type, payload or error, or a job id"),
                 *PAGING)),
    Route("POST", "/admin/jobs/replay", replay_jobs, "Replay every matching failed job",
          body=ReplayFilter, response=Replayed, status=202, errors=ADMIN, auth="admin"),
    Route("POST", "/admin/jobs/{job_id}/replay", replay_job, "Replay a failed job, once",
          response=AdminJob, status=202, auth="admin",
          errors=(*ADMIN, "JOB_NOT_FOUND", "JOB_NOT_REPLAYABLE", "JOB_ALREADY_REPLAYED")),
    Route("GET", "/admin/outbox", outbox_events, "Data-platform events and their delivery",
          response=Page[OutboxBody], errors=ADMIN, auth="admin",
          query=(Query("status", str, "PENDING, DELIVERED or DEAD"), *PAGING)),
    Route("POST", "/admin/outbox/{event_id}/replay", replay_event,
          "Deliver a DEAD event again", response=OutboxBody, status=202, auth="admin",
          errors=(*ADMIN, "OUTBOX_EVENT_NOT_FOUND", "OUTBOX_EVENT_NOT_DEAD")),
    Route("GET", "/admin/workers", workers, "Worker processes by heartbeat",
          response=Items[WorkerBody], errors=ADMIN, auth="admin"),
    Route("GET", "/admin/schedules", schedules, "Periodic tasks: last run, next due",
          response=Schedules, errors=ADMIN, auth="admin"),
]
