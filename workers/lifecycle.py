"""The job lifecycle around every command actor.

One delivery of a job message goes:

1. ``start_job``: queued/running -> running, ``attempts += 1`` (committed; counts
   deliveries, so a job that keeps killing its worker is failed after a few);
2. in one transaction: run the command, then mark the job ``succeeded`` only if it
   is not terminal yet -- the effect and the outcome commit together, and a delivery
   that loses that conditional update (another delivery finished first; it waited on
   the job row's lock) rolls its effect back;
3. a refusal (``DomainError``) rolls the effect back and fails the job with its code;
   a transient fault is re-raised so Dramatiq retries with backoff, and fails the job
   with ``INTERNAL_ERROR`` once the retries are spent; a bug fails it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import CurrentMessage

from db.connection import TRANSIENT_ERRORS
from db.models import Job
from jobs import records
from jobs.errors import DomainError
from workers import runtime
from workers.broker import COMMANDS_QUEUE

log = logging.getLogger(__name__)

Command = Callable[[Job, "runtime.Runtime"], dict]
Gate = Callable[[Job, "runtime.Runtime"], None]
GiveUp = Callable[[Job, "runtime.Runtime"], None]


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return message.options.get("retries", 0) if message else 0


def execute_job(
    job_id: str, command: Command, gate: Gate | None = None, give_up: GiveUp | None = None
) -> str:
    """Run one delivery of ``job_id`` through ``command``; returns the outcome.

    ``gate``, if given, runs before the transaction and may refuse (``DomainError``)
    without the command ever opening one. ``give_up``, if given, runs once when the job
    fails for good with ``INTERNAL_ERROR`` (faults, not refusals), to undo what the gate
    took.
    """
    rt = runtime.current()
    db, now = rt.database, rt.clock.now()
    extra = {"job_id": job_id}
    with db.connection_context():
        job = records.start_job(job_id, now)
        if job is None:
            log.info("job skipped: unknown or already terminal", extra=extra)
            rt.events.finished(job_id, "unknown", "skipped", None)
            return "skipped"
        extra |= {"job_type": job.type, "user_id": job.user_id, "attempt": job.attempts}
        if job.attempts > rt.settings.job_max_deliveries:
            return _fail(job, "INTERNAL_ERROR", "gave up after repeated deliveries", extra,
                         give_up)
        try:
            if gate is not None:
                gate(job, rt)
            with db.atomic() as transaction:
                result = command(job, rt)
                if records.finish_job(job_id, rt.clock.now(), result=result):
                    outcome = "succeeded"
                else:
                    transaction.rollback()
                    outcome = "skipped"
        except DomainError as refusal:
            return _fail(job, refusal.code, refusal.message, extra)
        except TRANSIENT_ERRORS as fault:
            if _retries_so_far() < rt.settings.job_max_retries:
                log.warning("job will retry", extra=extra | {"reason": repr(fault)})
                raise
            return _fail(job, "INTERNAL_ERROR", "a dependency kept failing", extra, give_up)
        except Exception:
            log.exception("job crashed", extra=extra)
            return _fail(job, "INTERNAL_ERROR", "internal error", extra, give_up)
    log.info("job %s", outcome, extra=extra)
    _announce(job, outcome)
    return outcome


def _fail(job: Job, code: str, message: str, extra: dict, give_up: GiveUp | None = None) -> str:
    rt = runtime.current()
    with rt.database.atomic():
        changed = records.finish_job(
            job.id, rt.clock.now(), error={"code": code, "message": message}
        )
    outcome = "failed" if changed else "skipped"
    if changed and give_up is not None:
        try:
            give_up(job, rt)
        except Exception:  # the job's outcome stands; log what could not be undone
            log.exception("could not undo a failed job's gate", extra=extra)
    log.info("job %s", outcome, extra=extra | {"reason": code})
    _announce(job, outcome)
    return outcome


def _announce(job: Job, outcome: str) -> None:
    rt = runtime.current()
    latency = (rt.clock.now() - job.created_at).total_seconds()
    try:
        rt.events.finished(str(job.id), job.type, outcome, latency)
    except Exception:  # the outcome is committed; a lost notification only delays pollers
        log.warning("could not publish job outcome", extra={"job_id": str(job.id)})


def command(
    job_type: str, gate: Gate | None = None, give_up: GiveUp | None = None
) -> Callable[[Command], dramatiq.Actor]:
    """Declare the actor for ``job_type``: a thin wrapper running ``fn`` in the lifecycle."""

    def decorate(fn: Command) -> dramatiq.Actor:
        def run(job_id: str) -> None:
            execute_job(job_id, fn, gate, give_up)

        run.__name__ = run.__qualname__ = fn.__name__
        run.__doc__ = fn.__doc__
        return dramatiq.actor(run, actor_name=job_type, queue_name=COMMANDS_QUEUE)

    return decorate
