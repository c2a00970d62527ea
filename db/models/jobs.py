"""The job record (one per accepted command) and the ledger of periodic runs."""

from __future__ import annotations

from enum import StrEnum

import peewee

from db.models.base import BaseModel, JSONField
from db.models.users import User


class JobStatus(StrEnum):
    """Lifecycle of a job: queued -> running -> succeeded | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED)


class Job(BaseModel):
    """An accepted command; its terminal state commits with its effect."""

    id = peewee.UUIDField(primary_key=True)
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    type = peewee.CharField(max_length=64)
    status = peewee.CharField(max_length=16, default=JobStatus.QUEUED)
    payload = JSONField()
    request_hash = peewee.CharField(max_length=64)
    idempotency_key = peewee.CharField(max_length=64, null=True)
    result = JSONField(null=True)
    error = JSONField(null=True)
    attempts = peewee.IntegerField(default=0)
    sent = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField()
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    # The job event sequence value of its last status change (``GET /jobs/events`` ids).
    seq = peewee.BigIntegerField(null=True)
    # The failed job this one replays (``POST /admin/jobs/{id}/replay``); UNIQUE: once.
    replay_of = peewee.UUIDField(null=True)

    class Meta:
        table_name = "jobs"
        indexes = (  # (user, idempotency_key) is unique where the key is set (0010)
            (("user", "created_at"), False),
            (("user", "seq"), False),
        )


class PeriodicRun(BaseModel):
    """One row per (schedule, time slot) that ran: a second dispatch of a slot is refused."""

    schedule_id = peewee.CharField(max_length=64)
    slot = peewee.BigIntegerField()
    ran_at = peewee.DateTimeField()

    class Meta:
        table_name = "periodic_runs"
        primary_key = peewee.CompositeKey("schedule_id", "slot")
