"""The job record: recording commands, their lifecycle, and reading them back."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
import peewee

from db.connection import database, execute, for_update, is_postgres, prepared
from db.models import Job, JobStatus
from db.models.jobs import TERMINAL
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.outbox import insert_events
from jobs.pagination import Moment, keyset_page

IDEMPOTENCY_WINDOW = timedelta(hours=24)


def new_job_id() -> uuid.UUID:
    """A time-ordered job id: a UUID of version 7 (RFC 9562), 48 bits of Unix
    milliseconds and then 74 random bits (``uuid.uuid7`` from Python 3.14 on).

    A new job's key lands at the right end of the primary key's index, on a page that the
    last commits touched, not on a random page of an index that grows with every job:
    on a 2-million-row table, random ids made every group commit dirty as many leaf
    pages as it had commands, each written whole to the WAL after a checkpoint. The
    random bits keep ids as hard to guess as before (a job is only ever shown to its
    owner anyway)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10)) >> 6  # 74 bits
    return uuid.UUID(int=(millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76
                     | (rand >> 62) << 64 | 0b10 << 62 | (rand & (1 << 62) - 1))


def request_hash(job_type: str, payload: dict[str, Any]) -> str:
    """A digest of what was asked, to tell a replayed request from a reused key."""
    canonical = json.dumps([job_type, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_job(
    user_id: int,
    job_type: str,
    payload: dict[str, Any],
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Job, bool]:
    """Record a command as a queued job; with a known key, return the original instead.

    Returns ``(job, created)``. Raises ``IDEMPOTENCY_KEY_REUSED`` when the key was used
    in the last 24 h for a different request.
    """
    digest = request_hash(job_type, payload)
    for _ in range(3):  # a concurrent insert of the same key loses once, then finds it
        try:
            with database.atomic():
                if idempotency_key is not None:
                    original = _claim_key(user_id, idempotency_key, digest, now)
                    if original is not None:
                        return original, False
                job = Job.create(
                    id=new_job_id(),
                    user=user_id,
                    type=job_type,
                    status=JobStatus.QUEUED,
                    payload=payload,
                    request_hash=digest,
                    idempotency_key=idempotency_key,
                    created_at=now,
                )
                return job, True
        except peewee.IntegrityError:
            if idempotency_key is None:
                raise
    raise DomainError("INTERNAL_ERROR", "could not record the job")


_RECORD_MANY = (
    "INSERT INTO jobs (id, user_id, type, status, payload, request_hash, error, attempts,"
    " sent, created_at, finished_at)"
    " SELECT c.id, c.user_id, c.type, CASE WHEN c.error IS NULL THEN 'queued' ELSE 'failed' END,"
    " c.payload, c.hash, c.error, 0, c.error IS NOT NULL, %s,"
    " CASE WHEN c.error IS NULL THEN NULL ELSE %s::timestamp END"
    " FROM unnest(%s::text[]::uuid[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " AS c(id, user_id, type, payload, hash, error)"
)


def record_jobs(
    commands: list[tuple[uuid.UUID, int, str, dict[str, Any], dict | None]], now: datetime
) -> list[Job]:
    """Record many keyless commands ``(id, user_id, type, payload, error)`` in one statement
    (atomic by itself: no transaction around it).

    A command with an ``error`` was refused before it could run (at the door): it is
    recorded already ``failed``, and is never sent.
    """
    jobs = [  # (no Idempotency-Key: no request to compare a retry with, so no hash)
        Job(id=job_id, user=user_id, type=job_type,
            status=JobStatus.FAILED if error else JobStatus.QUEUED, payload=payload,
            request_hash="", error=error, attempts=0,
            sent=bool(error), created_at=now, finished_at=now if error else None)
        for job_id, user_id, job_type, payload, error in commands
    ]
    if is_postgres():
        columns = (
            [str(job.id) for job in jobs], [job.user_id for job in jobs],
            [job.type for job in jobs], [_json(job.payload) for job in jobs],
            [job.request_hash for job in jobs],
            [None if job.error is None else _json(job.error) for job in jobs],
        )
        execute(_RECORD_MANY, (now, now, *columns), prepare=True)
    else:
        with database.atomic():
            Job.bulk_create(jobs)
    return jobs


_encode = msgspec.json.Encoder().encode


def _json(value: Any) -> str:
    return _encode(value).decode()


def _claim_key(user_id: int, key: str, digest: str, now: datetime) -> Job | None:
    """The live job holding ``key``, or None once an expired holder has let it go."""
    query = Job.select().where((Job.user == user_id) & (Job.idempotency_key == key))
    original = for_update(query).first()
    if original is None:
        return None
    if original.created_at < now - IDEMPOTENCY_WINDOW:
        Job.update(idempotency_key=None).where(Job.id == original.id).execute()
        return None
    if original.request_hash != digest:
        raise DomainError(
            "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request"
        )
    return original


_MARK_SENT = "UPDATE jobs SET sent = true WHERE id = ANY(%s::text[]::uuid[]) AND NOT sent"


def mark_sent(job_ids: list[uuid.UUID | str]) -> int:
    """Note that these jobs' messages reached the broker."""
    if not job_ids:
        return 0
    if is_postgres():
        cursor = execute(_MARK_SENT, ([str(job_id) for job_id in job_ids],), prepare=True)
        return cursor.rowcount
    return Job.update(sent=True).where(Job.id.in_(job_ids) & ~Job.sent).execute()


def forget_unsent(job_ids: list[uuid.UUID | str]) -> int:
    """Withdraw jobs whose messages could not be sent (the caller answers 503)."""
    return Job.delete().where(Job.id.in_(job_ids) & (Job.status == JobStatus.QUEUED)).execute()


def jobs_to_resend(now: datetime, older_than: timedelta, limit: int) -> list:
    """Unfinished jobs whose send was never confirmed: ``(id, type)`` pairs, oldest first."""
    query = Job.select(Job.id, Job.type).where(
        Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
        & ~Job.sent
        & (Job.created_at < now - older_than)
    )
    return [(job.id, job.type) for job in query.order_by(Job.created_at).limit(limit)]


# A terminal status change takes the next value of the job event sequence, in the same
# UPDATE: ``GET /jobs/events`` replays "every job changed since id N" from it. The
# delivery count written is the larger of the row's own and the delivery's (counted
# outside the transaction, so a delivery that died mid-job is still counted).
#
# Ids are taken in each user's commit order: on PostgreSQL the finish first takes a
# transaction-scoped advisory lock on its job's user (held until commit or rollback), so
# of two finishes of one user the second takes its id only once the first has ended. A
# reader that resumes after the highest id it saw of a user therefore misses none of
# that user's finishes (``nextval`` alone hands ids out in statement order, and a lower
# id that commits later fell behind such a reader). The lock is the transaction's last
# (the finish is its last statement), so it closes no cycle with the effect's row locks.
# SQLite runs one writer at a time: statement order is commit order there.
SEQ_LOCK = 0x6A6F6273  # the advisory lock namespace ("jobs"; the user id, mod 2^31 - 1, is
# the second key: two users that share one only wait for each other)
_NEXT_SEQ = {True: "nextval('job_event_seq')",
             False: "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs)"}
_ORDERED = {True: f" FROM (SELECT pg_advisory_xact_lock({SEQ_LOCK}, (SELECT"
                  " mod(user_id, 2147483647)::int FROM jobs WHERE id = %s))) AS ordered",
            False: ""}
_DELIVERIES = "CASE WHEN attempts > %s THEN attempts ELSE %s END"
_START = (
    "SELECT id, user_id, type, payload, created_at, attempts, started_at FROM jobs"
    " WHERE id = %s AND status IN ('queued', 'running')"
)
_FINISH = (
    "UPDATE jobs SET status = %s, result = %s, error = %s, finished_at = %s, seq = {seq},"
    " started_at = COALESCE(started_at, %s), attempts = " + _DELIVERIES + "{ordered}"
    " WHERE id = %s AND status NOT IN ('succeeded', 'failed')"
    " RETURNING user_id, type, created_at, started_at, attempts, seq"
)
_FINISH_SQL = {postgres: _FINISH.replace("{seq}", _NEXT_SEQ[postgres])
               .replace("{ordered}", _ORDERED[postgres]) for postgres in (True, False)}
# The finish that carries its transaction's COMMIT (PostgreSQL): a job that is already
# terminal must stop the COMMIT, so the finish fails then (1 / 0, division_by_zero) and
# nothing after it in the round trip runs; what it returned is read back after the COMMIT
# (the row is terminal by then: nothing else changes those columns).
_FINISH_CHECKED = f"WITH finished AS ({_FINISH_SQL[True]}) SELECT 1 / count(*) FROM finished"
_FINISH_READ = ("SELECT user_id, type, created_at, started_at, attempts, seq FROM jobs"
                " WHERE id = %s")
_ALREADY_TERMINAL = "22012"  # division_by_zero: only the checked finish divides


def start_job(job_id: uuid.UUID | str, now: datetime, delivery: int = 0) -> Job | None:
    """Lock an unfinished job for this delivery; None if it is unknown or already terminal.

    Inside the job's transaction the row lock is the delivery's lease (another delivery
    waits for it, then finds the job terminal); nothing is written until the finish,
    which records the start time and the delivery count (at least ``delivery``, the
    worker's own count, and one more than the row's).
    """
    sql = _START + (" FOR UPDATE" if is_postgres() else "")
    row = execute(sql, (Job.id.db_value(job_id),), prepare=True).fetchone()
    if row is None:
        return None
    return Job.loaded(
        id=Job.id.python_value(row[0]),
        user=row[1],
        type=row[2],
        payload=Job.payload.python_value(row[3]),
        created_at=Job.created_at.python_value(row[4]),
        attempts=max(row[5] + 1, delivery),
        started_at=Job.started_at.python_value(row[6]) or now,
        status=JobStatus.RUNNING,
    )


def delivered_job(job_id: uuid.UUID | str, job_type: str, user_id: int,
                  payload: dict[str, Any], now: datetime, delivery: int) -> Job:
    """The job a message carried, as ``start_job`` would have read it (nothing is read or
    written: the finish checks that the job is still unfinished, and writes its start)."""
    return Job.loaded(id=Job.id.python_value(job_id), user=user_id, type=job_type,
                      payload=payload, attempts=max(delivery, 1), started_at=now,
                      status=JobStatus.RUNNING)


def finish_job(
    job_id: uuid.UUID | str,
    now: datetime,
    *,
    result: dict | None = None,
    error: dict | None = None,
    delivery: int = 0,
    started: datetime | None = None,
    outbox: list[tuple[str, dict]] = (),
    commit: bool = False,
) -> Job | None:
    """Make a job terminal (succeeded with ``result`` or failed with ``error``), once,
    counting at least ``delivery`` deliveries (and, if its start was rolled back with
    its effect, started at ``started``).

    ``outbox`` events (``(topic, payload)``, emitted by the job's handler) are written
    with the finish. Returns the terminal job, or None if it already was terminal (the
    caller rolls back: the events with the rest).

    With ``commit`` (nothing follows the finish in its transaction), on PostgreSQL and
    outside any enclosing transaction or savepoint, the transaction's COMMIT goes in the
    same round trip, only if the job was not terminal yet; otherwise the caller's
    ``atomic()`` block commits as usual.
    """
    status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
    key, postgres = Job.id.db_value(job_id), is_postgres()
    params = (str(status), Job.result.db_value(result), Job.error.db_value(error), now,
              started, delivery, delivery, *((key,) if postgres else ()), key)
    arity, statements = len(params), []
    if outbox:
        written, more = insert_events(outbox, now)
        if postgres:  # in the finish's round trip
            statements.append(prepared(written, len(more)))
            params = more + params
        else:
            execute(written, more)
    if postgres and commit and database.in_outermost_transaction():
        row = _finish_committing(statements, params, arity, key)
    elif statements:  # (the cursor holds the last statement's rows)
        statements.append(prepared(_FINISH_SQL[postgres], arity))
        row = execute("; ".join(statements), params).fetchone()
    else:
        row = execute(_FINISH_SQL[postgres], params, prepare=True).fetchone()
    if row is None:
        return None
    return Job.loaded(id=Job.id.python_value(job_id), user=row[0], type=row[1], status=status,
                      result=result, error=error,
                      created_at=Job.created_at.python_value(row[2]),
                      started_at=Job.started_at.python_value(row[3]), finished_at=now,
                      attempts=row[4], seq=row[5])


def _finish_committing(statements: list[str], params: tuple, arity: int,
                       key: Any) -> tuple | None:
    """``statements``, the checked finish (its ``arity`` parameters last in ``params``),
    COMMIT and the read-back in one round trip; the finish's row, or None (nothing
    committed) if the job was already terminal."""
    finish = prepared(_FINISH_CHECKED, arity)
    try:
        cursor = database.commit_with("; ".join([*statements, finish]), (*params, key),
                                      after=prepared(_FINISH_READ, 1))
    except peewee.DataError as e:
        if getattr(getattr(e, "orig", None), "pgcode", None) == _ALREADY_TERMINAL:
            return None
        raise
    return cursor.fetchone()


def changed_since(user_id: int, after: int, limit: int = 1000) -> list[Job]:
    """The user's jobs whose status changed after event ``after``, in event order."""
    query = (Job.select().where((Job.user == user_id) & (Job.seq > after))
             .order_by(Job.seq).limit(limit))
    return list(query)


def get_job(job_id: str, user_id: int) -> Job:
    """The caller's job; anyone else's, or a malformed id, is ``JOB_NOT_FOUND``."""
    try:
        uid = uuid.UUID(job_id)
    except ValueError:
        raise DomainError("JOB_NOT_FOUND", "no such job") from None
    job = Job.get_or_none((Job.id == uid) & (Job.user == user_id))
    if job is None:
        raise DomainError("JOB_NOT_FOUND", "no such job")
    return job


def list_jobs(
    user_id: int, status: str | None, job_type: str | None, limit: int, cursor: str | None
) -> dict:
    """The caller's jobs, newest first, one page."""
    query = Job.select().where(Job.user == user_id)
    if status:
        query = query.where(Job.status == status)
    if job_type:
        query = query.where(Job.type == job_type)
    items, next_cursor = keyset_page(query, (Job.created_at, Job.id), tuple[Moment, uuid.UUID],
                                     limit, cursor, newest_first=True)
    return {"items": [job_view(j) for j in items], "next_cursor": next_cursor}


def is_terminal(job: Job) -> bool:
    """Whether the job has its final outcome."""
    return job.status in TERMINAL


def job_view(job: Job) -> dict:
    """The API's job body."""
    return {
        "id": str(job.id),
        "type": job.type,
        "status": job.status,
        "result": job.result,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempts,
    }
