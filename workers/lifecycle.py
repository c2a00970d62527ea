"""The lifecycle around every command, periodic task and reaction: it owns the transaction.

One delivery of a job message goes:

1. the delivery is counted in Redis (outside any transaction: a delivery that kills
   its worker still counts, so a job that keeps doing so is given up after
   ``JOB_MAX_DELIVERIES``): by the broker's fetch (``workers.consumer``), else here. A
   delivery that ended in a retry did not kill its worker: the message's retries are
   not held against it (a database outage of any length retries its jobs until it
   ends);
2. in one transaction, one commit: ``start_job`` (the unfinished job's row locked FOR
   UPDATE: the delivery's lease; a second delivery of the same job waits for it, then
   finds the job terminal and is skipped), the handler, and the job marked
   ``succeeded`` with its start time and delivery count -- the effect and the outcome
   commit together, and the job row is written once. A command with a ``gate`` lets
   the lease go and runs the gate outside any transaction (it may refuse), then the
   handler in a transaction of its own (whose conditional finish still lets one
   delivery win);
3. after the commit, and only then: the events the handler emitted go to their
   reactions, then are published (live ones to every web process's hub) together with
   the job's own status event, so a client woken by the outcome finds the reactions
   done (one reading the database in those milliseconds may not);
4. a refusal (``DomainError``) rolls the effect back, drops its events and fails the job
   with its code; a transient fault is re-raised so Dramatiq retries with backoff, and
   fails the job with ``INTERNAL_ERROR`` once the retries are spent; a bug fails it at
   once. After a committed failure the command's ``give_up`` hook runs.

Periodic tasks run the same way: the slot claim, the handler and its effects in one
transaction (a second run of a slot finds the claim and does nothing), events after
commit, transient faults retried. Each reaction gets its own transaction and context.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis
from dramatiq.middleware import CurrentMessage

from db.connection import TRANSIENT_ERRORS
from db.models import Job
from jobs import records, sweeps
from jobs.errors import DomainError
from jobs.platform import REGISTRY, Command, Context, Event
from workers import runtime
from workers.consumer import DELIVERIES

log = logging.getLogger(__name__)
MAX_REACTION_DEPTH = 4
# Faults worth retrying: the database's (lost connection, serialization failure,
# deadlock) and a lost Redis (a gate's or an adapter's).
RETRYABLE = (*TRANSIENT_ERRORS, redis.ConnectionError, redis.TimeoutError)


def _count_delivery(rt: runtime.Runtime, job_id: str, extra: dict) -> int:
    """This delivery's number: counted by the fetch that brought its message, else here
    (a message the stub broker, or an older sender, delivered; a direct call)."""
    message = CurrentMessage.get_current_message()
    counted = message.options.get(DELIVERIES) if message is not None else None
    if counted is not None:
        return counted
    try:
        return rt.publisher.count_delivery(job_id)
    except redis.RedisError as e:  # the row's own count still holds
        log.warning("could not count the delivery", extra=extra | {"reason": repr(e)})
        return 0


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return message.options.get("retries", 0) if message else 0


def _may_retry() -> bool:
    return _retries_so_far() < runtime.current().settings.job_max_retries


class _GiveUp(Exception):
    """The delivery cannot run the job (no such command, too many deliveries)."""


def execute_job(job_id: str, command: Command | None = None, *, job_type: str | None = None,
                user_id: int | None = None, payload: dict | None = None) -> str:
    """Run one delivery of ``job_id`` (through ``command``, else ``job_type``'s registered
    one, else the one its row names).

    A message that carries its job (``user_id`` and ``payload``) runs without reading the
    row first: its conditional finish still lets exactly one delivery's effect commit (a
    second delivery waits on the first's row lock, then finds the job terminal and rolls
    its own effect back). A command with a gate reads the row (its lease) even so: the
    gate's effect is outside the transaction and must not run for a finished job.
    """
    rt = runtime.current()
    extra: dict[str, Any] = {"job_id": job_id}
    delivery = _count_delivery(rt, job_id, extra)
    if command is None and job_type is not None:
        command = REGISTRY.commands.get(job_type)
    carried, payload = payload, None  # (``payload``: the decoded one, once it is)
    job = ctx = finished = None
    with rt.connection():
        try:
            with rt.database.atomic() as transaction:
                if (carried is not None and user_id is not None and command is not None
                        and command.gate is None):
                    job = records.delivered_job(job_id, command.type, user_id, carried,
                                                rt.clock.now(), delivery)
                else:
                    job = records.start_job(job_id, rt.clock.now(), delivery)
                if job is None:
                    transaction.rollback()
                else:
                    extra |= {"job_type": job.type, "user_id": job.user_id,
                              "attempt": job.attempts}
                    ctx = Context(now=rt.clock.now(), services=rt, job=job, user_id=job.user_id,
                                  defer_outbox=True)
                    command = command or REGISTRY.commands.get(job.type)
                    if command is None:
                        raise _GiveUp("no such command")
                    if job.attempts - _retries_so_far() > rt.settings.job_max_deliveries:
                        raise _GiveUp("gave up after repeated deliveries")
                    payload = command.decode(job.payload)
                    if command.gate is not None:
                        transaction.commit()  # the lease goes; the gate runs outside any
                        command.gate(ctx, payload)
                    result = command.handler(ctx, payload)
                    finished = records.finish_job(job_id, rt.clock.now(), result=result,
                                                  delivery=job.attempts, started=job.started_at,
                                                  outbox=ctx.outbox, commit=True)
                    # (on PostgreSQL the finish carried the COMMIT, unless it found the
                    # job terminal: then nothing was committed and this rolls it back)
                    if finished is None:  # another delivery finished it: undo this one
                        transaction.rollback()
        except _GiveUp as reason:
            return _fail(ctx, command, None, "INTERNAL_ERROR", str(reason), extra)
        except DomainError as refusal:
            return _fail(ctx, command, payload, refusal.code, refusal.message, extra)
        except msgspec.ValidationError as e:
            return _fail(ctx, command, None, "INTERNAL_ERROR", "stored payload is invalid",
                         extra | {"reason": str(e)})
        except RETRYABLE as fault:
            if _may_retry() or ctx is None:
                log.warning("job will retry", extra=extra | {"reason": repr(fault)})
                raise
            return _fail(ctx, command, payload, "INTERNAL_ERROR", "a dependency kept failing",
                         extra)
        except Exception as crash:
            if ctx is None:  # before the job was read: nothing to fail yet
                raise
            outcome = _fail(ctx, command, payload, "INTERNAL_ERROR", "internal error", extra)
            if outcome == "failed":  # (a redelivery of a finished job is only skipped)
                log.error("job crashed", exc_info=crash, extra=extra)
            return outcome
    if finished is None:
        log.info("job skipped: unknown or already terminal", extra=extra)
        rt.publisher.publish((), job.type if job else "unknown", "skipped", job_id=job_id)
        return "skipped"
    log.info("job succeeded", extra=extra)
    _after_commit(ctx.events, finished, "succeeded")
    return "succeeded"


def _fail(ctx: Context, command: Command | None, payload: Any, code: str, message: str,
          extra: dict) -> str:
    """Commit the job's failure (dropping whatever it emitted), then run ``give_up``."""
    rt, job = ctx.services, ctx.job
    with rt.database.atomic():
        finished = records.finish_job(job.id, rt.clock.now(), delivery=job.attempts,
                                      error={"code": code, "message": message},
                                      started=job.started_at)
    if finished is None:
        rt.publisher.publish((), job.type, "skipped", job_id=str(job.id))
        return "skipped"
    log.info("job failed", extra=extra | {"reason": code})
    if command is not None and command.give_up is not None and payload is not None:
        try:
            command.give_up(Context(now=rt.clock.now(), services=rt, job=job,
                                    user_id=job.user_id), payload, code)
        except Exception:  # the job's outcome stands; log what could not be undone
            log.exception("could not undo a failed job's gate", extra=extra)
    _after_commit([], finished, "failed")
    return "failed"


def _after_commit(events: list[Event], job: Job, outcome: str) -> None:
    """Run the reactions to what the handler emitted, then publish it with the job's
    status event: a client woken by the outcome finds its after-commit effects done
    (a paid seat's queue token already ended, say)."""
    rt = runtime.current()
    react(events)
    status = Event("job", records.job_view(job), key=str(job.user_id), id=job.seq)
    latency = (rt.clock.now() - job.created_at).total_seconds()
    try:
        rt.publisher.publish([status, *events], job.type, outcome, latency, str(job.id))
    except Exception:  # committed; a lost notice only delays pollers and live streams
        log.warning("could not publish job events", extra={"job_id": str(job.id)})


def react(events: list[Event], depth: int = 0) -> list[dict]:
    """Run the reactions to committed ``events``, each in its own transaction."""
    rt, results = runtime.current(), []
    for event in events:
        for reaction in REGISTRY.reactions.get(event.topic, ()):
            ctx = Context(now=rt.clock.now(), services=rt)
            try:
                with rt.connection(), rt.database.atomic():
                    result = reaction(ctx, event)
            except Exception:  # each reaction's own retry story (leases, sweeps) covers it
                log.exception("reaction failed", extra={"topic": event.topic})
                continue
            results.append(result or {})
            if ctx.events and depth < MAX_REACTION_DEPTH:
                results += hand_out(ctx.events, depth + 1)
    return results


def hand_out(events: list[Event], depth: int = 0) -> list[dict]:
    """Committed events: their reactions first, then the live ones are published."""
    results = react(events, depth)
    if events:
        try:
            runtime.current().publisher.publish(events)
        except Exception:
            log.warning("could not publish events", exc_info=True)
    return results


def run_periodic(schedule_id: str, slot: int) -> dict | None:
    """Run ``schedule_id`` for ``slot`` unless that slot already ran.

    Returns what the handler and its reactions reported, or None when nothing ran.
    """
    rt = runtime.current()
    task = REGISTRY.periodic.get(schedule_id)
    extra = {"schedule_id": schedule_id, "slot": slot}
    if task is None:
        log.error("unknown periodic task", extra=extra)
        return None
    ctx = Context(now=rt.clock.now(), services=rt)
    try:
        with rt.connection(), rt.database.atomic():
            if not sweeps.claim_slot(schedule_id, slot, ctx.now):
                log.info("periodic slot already ran", extra=extra)
                return None
            result = task.handler(ctx)
    except DomainError as refusal:
        log.warning("periodic task refused", extra=extra | {"reason": refusal.code})
        return None
    except RETRYABLE as fault:
        if _may_retry():
            log.warning("periodic task will retry", extra=extra | {"reason": repr(fault)})
            raise
        log.error("periodic task kept failing", extra=extra | {"reason": repr(fault)})
        return None
    except Exception:  # a bug: the next slot tries again
        log.exception("periodic task crashed", extra=extra)
        return None
    for more in hand_out(ctx.events):
        result = result | more
    log.debug("periodic ran", extra=extra | result)
    return result
