"""Running commands through the whole job lifecycle in jobs-level tests, and their outcome."""

from __future__ import annotations

from db.models import Job
from jobs import records
from jobs.clock import utcnow
from workers import lifecycle


def run(uid: int, job_type: str, **payload) -> Job:
    """A command through the whole job lifecycle (its transaction, events, reactions)."""
    job, _ = records.record_job(uid, job_type, payload, None, utcnow())
    lifecycle.execute_job(str(job.id))
    return Job.get_by_id(job.id)


def ok(job: Job) -> dict:
    """The result of a job that must have succeeded."""
    assert job.status == "succeeded", (job.status, job.error)
    return job.result


def refused(job: Job) -> str:
    """The reason code of a job that must have failed."""
    assert job.status == "failed", (job.status, job.result)
    return job.error["code"]
