"""``/jobs``: job status (with long polling) and the caller's job list."""

from __future__ import annotations

from aiohttp import web

from db.models import JobStatus
from jobs import records
from jobs.errors import InvalidRequest
from web.auth import require_user
from web.commands import DB, GATEWAY, MAX_WAIT
from web.responses import json_response
from web.validation import page_params, query_choice, query_int

STATUSES = {s.value for s in JobStatus}


async def get_job(request: web.Request) -> web.Response:
    """``GET /jobs/{id}?wait=N``: the caller's job, held until terminal or N seconds pass."""
    user_id = await require_user(request)
    wait = query_int(request.query.get("wait", "0"), "wait", 0, MAX_WAIT)
    job_id = request.match_info["job_id"]
    if wait:
        job = await request.app[GATEWAY].wait(job_id, user_id, wait)
    else:
        job = await request.app[DB](records.get_job, job_id, user_id)
    return json_response(records.job_view(job))


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
