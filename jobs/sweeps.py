"""Periodic work: the ledger that makes each scheduled slot run once, and the re-send sweep."""

from __future__ import annotations

from datetime import datetime, timedelta

from db.models import Job, JobStatus, PeriodicRun
from jobs import records


def claim_slot(schedule_id: str, slot: int, now: datetime) -> bool:
    """Inside the run's transaction: True for the first run of this slot, False for a repeat."""
    inserted = (
        PeriodicRun.insert(schedule_id=schedule_id, slot=slot, ran_at=now)
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    return inserted == 1


def forget_sends() -> int:
    """After the broker lost its queues: treat every unfinished job as never sent."""
    return (
        Job.update(sent=False)
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]) & Job.sent)
        .execute()
    )


def unsent_jobs(now: datetime, grace_seconds: int, limit: int = 1000) -> list:
    """Unfinished jobs recorded more than ``grace_seconds`` ago whose send was never confirmed."""
    return records.jobs_to_resend(now, timedelta(seconds=grace_seconds), limit)


def prune_runs(before: datetime) -> int:
    """Drop ledger rows too old to be dispatched again."""
    return PeriodicRun.delete().where(PeriodicRun.ran_at < before).execute()
