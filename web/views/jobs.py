"""``/jobs``: job status (with long polling), the caller's job list, and the live stream."""

from __future__ import annotations

from aiohttp import web

from db.models import JobStatus
from jobs import records
from jobs.errors import InvalidRequest
from jobs.platform import Event
from web import sse
from web.auth import require_stream_user, require_user
from web.commands import DB, GATEWAY, HUB, MAX_WAIT, STREAMS
from web.responses import json_response
from web.validation import page_params, query_choice, query_int

STATUSES = {s.value for s in JobStatus}


async def get_job(request: web.Request) -> web.Response:
    """``GET /jobs/{id}?wait=N``: the caller's job, held until terminal or N seconds pass."""
    user_id = await require_user(request)
    wait = query_int(request.query.get("wait", "0"), "wait", 0, MAX_WAIT)
    job_id = request.match_info["job_id"]
    if wait:
        return json_response(await request.app[GATEWAY].wait(job_id, user_id, wait))
    return json_response(records.job_view(await request.app[DB](records.get_job, job_id,
                                                                 user_id)))


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /jobs?status=&type=&limit=&cursor=``: the caller's jobs, newest first."""
    user_id = await require_user(request)
    status = query_choice(request, "status", STATUSES)
    job_type = request.query.get("type") or None
    if job_type is not None and len(job_type) > 64:
        raise InvalidRequest({"type": "must be at most 64 characters"})
    limit, cursor = page_params(request)
    return json_response(
        await request.app[DB](records.list_jobs, user_id, status, job_type, limit, cursor)
    )


async def job_events(request: web.Request) -> web.StreamResponse:
    """``GET /jobs/events``: the caller's job status changes, live (``event: job``)."""
    user_id = await require_stream_user(request)
    db = request.app[DB]

    async def changed_since(after: int | None) -> list[Event]:
        jobs = await db(records.changed_since, user_id, after or 0)
        return [Event("job", records.job_view(job), str(user_id), job.seq) for job in jobs]

    return await sse.stream(request, request.app[HUB], request.app[STREAMS], "job",
                            str(user_id), changed_since)
