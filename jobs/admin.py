"""What operators read and do: every user's jobs, their statistics, and replays.

Everything here reads PostgreSQL, so the console's history survives restarts. A replay
is a new job (same type, owner and payload) whose ``replay_of`` names the failed one;
``replay_of`` is UNIQUE, so a job is replayed at most once however many operators (or
bulk replays) race for it. The new job is recorded unsent; the caller sends it after
the commit and marks it sent, and if the process dies in between, the re-send sweep
sends it: a replay is never lost and never doubled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import peewee
from peewee import SQL, fn

from db.connection import execute, for_update, is_postgres
from db.models import Job, JobStatus, OutboxEvent, PeriodicRun
from jobs import outbox, records
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.pagination import Moment, id_page, keyset_page

REPLAYABLE = "INTERNAL_ERROR"
MAX_WINDOW = 72 * 3600
BATCH = 500
Sender = Callable[[list[tuple[uuid.UUID, str]]], None]


def error_code() -> peewee.Node:
    """The reason code inside a job's stored ``error`` (JSON text)."""
    if is_postgres():
        return fn.jsonb_extract_path_text(Job.error.cast("jsonb"), "code")
    return fn.json_extract(Job.error, "$.code")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _matches(column: peewee.Node, pattern: str) -> peewee.Node:
    r"""``column`` contains ``pattern`` (from ``_like``), ignoring case. PostgreSQL's ILIKE
    takes the backslash as its escape; SQLite's LIKE (which ignores ASCII case) must be
    told, or ``\%`` would look for a backslash."""
    if is_postgres():
        return column ** pattern
    return peewee.NodeList((column, peewee.SQL("LIKE"), pattern, peewee.SQL("ESCAPE '\\'")))


def _filtered(query: peewee.Select, status: str | None, job_type: str | None,
              code: str | None, text: str | None) -> peewee.Select:
    if status:
        query = query.where(Job.status == status)
    if job_type:
        query = query.where(Job.type == job_type)
    if code:
        query = query.where(error_code() == code)
    if text:
        try:  # a job id finds that job (by its key: no scan)
            query = query.where(Job.id == uuid.UUID(text))
        except ValueError:
            pattern = _like(text)
            query = query.where(_matches(Job.type, pattern)
                                | _matches(Job.payload.cast("text"), pattern)
                                | _matches(Job.error.cast("text"), pattern))
    return query


def list_jobs(status: str | None, job_type: str | None, code: str | None, text: str | None,
              limit: int, cursor: str | None) -> dict:
    """Every user's jobs, newest first, filtered by status, type, reason code and text."""
    Replay = Job.alias("replay")
    query = (Job.select(Job, Replay.id.alias("replayed_by"))
             .join(Replay, peewee.JOIN.LEFT_OUTER, on=(Replay.replay_of == Job.id))
             .objects())
    query = _filtered(query, status, job_type, code, text)
    items, next_cursor = keyset_page(query, (Job.created_at, Job.id), tuple[Moment, uuid.UUID],
                                     limit, cursor, newest_first=True)
    return {"items": [admin_view(job) for job in items], "next_cursor": next_cursor}


def admin_view(job: Job) -> dict:
    """A job as the console shows it: the user's view plus owner, payload and replays."""
    replayed_by = getattr(job, "replayed_by", None)
    return records.job_view(job) | {
        "user_id": job.user_id,
        "payload": job.payload,
        "replay_of": None if job.replay_of is None else str(job.replay_of),
        "replayed_by": None if replayed_by is None else str(replayed_by),
        "replayable": is_replayable(job) and replayed_by is None,
    }


def is_replayable(job: Job) -> bool:
    """Only a job that failed for an internal fault can be replayed: a refusal (a
    business rule said no) would say no again, or worse, say yes twice."""
    return job.status == JobStatus.FAILED and (job.error or {}).get("code") == REPLAYABLE


def _replay_row(job: Job, now: datetime) -> dict:
    return {"id": records.new_job_id(), "user": job.user_id, "type": job.type,
            "status": JobStatus.QUEUED, "payload": job.payload,
            "request_hash": job.request_hash, "attempts": 0, "sent": False,
            "created_at": now, "replay_of": job.id}


def replay_job(job_id: str, now: datetime) -> Job:
    """Record the replay of one failed job (unsent; see the module's notes), in one
    transaction. 404 ``JOB_NOT_FOUND``, 409 ``JOB_NOT_REPLAYABLE`` or
    ``JOB_ALREADY_REPLAYED``."""
    try:
        uid = uuid.UUID(job_id)
    except ValueError:
        raise DomainError("JOB_NOT_FOUND", "no such job") from None
    already = DomainError("JOB_ALREADY_REPLAYED", "this job was replayed already")
    try:
        with Job._meta.database.atomic():
            job = for_update(Job.select().where(Job.id == uid)).first()
            if job is None:
                raise DomainError("JOB_NOT_FOUND", "no such job")
            if not is_replayable(job):
                raise DomainError("JOB_NOT_REPLAYABLE",
                                  f"only a job that failed {REPLAYABLE} can be replayed")
            if Job.select().where(Job.replay_of == uid).exists():
                raise already
            row = _replay_row(job, now)
            Job.insert(row).execute()
    except peewee.IntegrityError:  # a bulk replay recorded it first (UNIQUE replay_of)
        raise already from None
    return Job(**row)


def replay_matching(job_type: str | None, code: str | None, now: datetime,
                    send: Sender | None, progress: Callable[[int], None] | None = None,
                    text: str | None = None) -> int:
    """Replay every replayable failed job of ``job_type`` (any, if None) that failed with
    ``code`` (only ``INTERNAL_ERROR`` is replayable), holding ``text`` (as the list's
    ``q``), and was not replayed yet.

    Works in batches: each batch is recorded in one transaction, then sent and marked
    sent (with no ``send``, the re-send sweep sends them within seconds); ``progress``
    is called with the running total. Returns how many were replayed.
    """
    if code not in (None, REPLAYABLE):
        return 0
    total, after = 0, None
    while True:
        with Job._meta.database.atomic():
            batch = _replayable_batch(job_type, text, after)
            if not batch:
                return total
            after = (batch[-1].created_at, batch[-1].id)
            rows = [_replay_row(job, now) for job in batch]
            Job.insert_many(rows).on_conflict_ignore().execute()
            ids = [row["id"] for row in rows]
            recorded = {job.id for job in Job.select(Job.id).where(Job.id.in_(ids))}
        pending = [(row["id"], row["type"]) for row in rows if row["id"] in recorded]
        if pending and send is not None:
            send(pending)
            records.mark_sent([job_id for job_id, _ in pending])
        total += len(pending)
        if progress is not None:
            progress(total)


def _replayable_batch(job_type: str | None, text: str | None,
                      after: tuple | None) -> list[Job]:
    Replay = Job.alias("replay")
    query = (Job.select(Job.id, Job.user, Job.type, Job.payload, Job.request_hash,
                        Job.created_at)
             .where((Job.status == JobStatus.FAILED) & (error_code() == REPLAYABLE)
                    & ~fn.EXISTS(Replay.select(SQL("1")).where(Replay.replay_of == Job.id))))
    query = _filtered(query, None, job_type, None, text)
    if after is not None:
        query = query.where(peewee.Tuple(Job.created_at, Job.id) > peewee.Tuple(*after))
    return list(query.order_by(Job.created_at, Job.id).limit(BATCH))


def send_recorded(job: Job, send: Sender) -> None:
    """After the replay's commit: send its message and mark it sent (if this fails, the
    re-send sweep sends it)."""
    send([(job.id, job.type)])
    records.mark_sent([job.id])


_STATS_PG = """
SELECT type,
       count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE status = 'failed'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
FROM jobs WHERE finished_at >= %s GROUP BY type ORDER BY type
"""


def stats(window: int, now: datetime) -> list[dict]:
    """Per job type, over the last ``window`` seconds: outcomes, rate, failure ratio and
    submit-to-terminal latency percentiles (milliseconds)."""
    since = now - timedelta(seconds=window)
    rows = execute(_STATS_PG, (since,)).fetchall() if is_postgres() else _stats_in_python(since)
    out = []
    for job_type, succeeded, failed, p50, p95 in rows:
        done = succeeded + failed
        out.append({
            "type": job_type, "succeeded": succeeded, "failed": failed,
            "per_second": round(done / window, 6),
            "failure_ratio": round(failed / done, 4) if done else 0.0,
            "p50_ms": None if p50 is None else round(float(p50) * 1000, 1),
            "p95_ms": None if p95 is None else round(float(p95) * 1000, 1),
        })
    return out


def _stats_in_python(since: datetime) -> list[tuple]:
    """SQLite (development) has no percentiles: the same figures, computed here."""
    by_type: dict[str, list] = {}
    query = (Job.select(Job.type, Job.status, Job.created_at, Job.finished_at)
             .where(Job.finished_at >= since).tuples())
    for job_type, status, created, finished in query:
        entry = by_type.setdefault(job_type, [0, 0, []])
        entry[0 if status == JobStatus.SUCCEEDED else 1] += 1
        entry[2].append((finished - created).total_seconds())
    return [(t, s, f, _percentile(d, 0.5), _percentile(d, 0.95))
            for t, (s, f, d) in sorted(by_type.items())]


def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's ``percentile_cont``."""
    if not values:
        return None
    values = sorted(values)
    rank = q * (len(values) - 1)
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def list_outbox(status: str | None, limit: int, cursor: str | None) -> dict:
    """Outbox events, newest first, with their attempts and last error."""
    query = OutboxEvent.select()
    if status:
        query = query.where(OutboxEvent.status == status)
    items, next_cursor = id_page(query, OutboxEvent.id, limit, cursor, newest_first=True)
    return {"items": [outbox_view(e) for e in items], "next_cursor": next_cursor}


def outbox_view(event: OutboxEvent) -> dict:
    """An outbox event as the console shows it."""
    return {"id": event.id, "topic": event.topic, "payload": event.payload,
            "status": event.status, "attempts": event.attempts,
            "last_error": event.last_error, "created_at": iso(event.created_at),
            "next_attempt_at": iso(event.next_attempt_at),
            "delivered_at": iso(event.delivered_at)}


def replay_event(event_id: int, now: datetime) -> dict:
    """Give one DEAD event a fresh round of delivery attempts (once: only a DEAD event
    can be replayed, and the replay makes it PENDING). 404 ``OUTBOX_EVENT_NOT_FOUND``,
    409 ``OUTBOX_EVENT_NOT_DEAD``."""
    rows = list(OutboxEvent.update(status=outbox.PENDING, attempts=0, next_attempt_at=now)
                .where((OutboxEvent.id == event_id) & (OutboxEvent.status == outbox.DEAD))
                .returning(OutboxEvent).execute())
    if rows:
        return outbox_view(rows[0])
    if OutboxEvent.get_or_none(OutboxEvent.id == event_id) is None:
        raise DomainError("OUTBOX_EVENT_NOT_FOUND", "no such outbox event")
    raise DomainError("OUTBOX_EVENT_NOT_DEAD", "only a DEAD event can be replayed")


def last_runs() -> dict[str, datetime]:
    """The time each periodic task last ran (from the run ledger, which keeps a day)."""
    query = (PeriodicRun.select(PeriodicRun.schedule_id, fn.MAX(PeriodicRun.ran_at))
             .group_by(PeriodicRun.schedule_id).tuples())
    return dict(query)
