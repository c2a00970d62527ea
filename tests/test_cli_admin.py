"""The operator commands on failures, run as real ``bazaar`` processes: ``outbox-replay``
on dead events, ``jobs failed`` and ``jobs replay`` on failed jobs (counts printed, rows
changed, messages in the broker's Redis queue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from db.models import Job, OutboxEvent, User
from jobs.clock import utcnow
from tests.support import ROOT
from workers.broker import COMMANDS_QUEUE, dramatiq_namespace


def bazaar(process_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT,
                          env={**os.environ, **process_env}, capture_output=True, text=True,
                          timeout=60)


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run.stdout


def table(out: str) -> tuple[list[list[str]], str]:
    """The rows of a ``jobs failed`` table (split on spaces) and its closing line."""
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["ID", "TYPE", "USER", "CODE", "ATTEMPTS"], out
    return [line.split() for line in lines[1:-1]], lines[-1]


def test_outbox_replay_revives_dead_events_and_prints_the_counts(process_env, clean_db):
    # Given three DEAD events, two delivered and one pending
    now = utcnow()
    for status, n in (("DEAD", 3), ("DELIVERED", 2), ("PENDING", 1)):
        for i in range(n):
            OutboxEvent.create(topic="order.paid", payload={"order": i}, status=status,
                               attempts=4 if status == "DEAD" else 1, next_attempt_at=now,
                               last_error="sink down" if status == "DEAD" else None,
                               created_at=now)
    dead = [e.id for e in OutboxEvent.select().where(OutboxEvent.status == "DEAD")]
    # When the operator replays them
    out = ok(bazaar(process_env, "outbox-replay"))
    # Then it says how many, and the outbox per status, every status named
    assert out == "replayed 3 dead event(s); outbox now: DEAD 0, DELIVERED 2, PENDING 4\n"
    # ... and each dead event gets a fresh round of attempts
    revived = OutboxEvent.select().where(OutboxEvent.id.in_(dead))
    assert [(e.status, e.attempts) for e in revived] == [("PENDING", 0)] * 3
    # ... once: a second run finds nothing dead
    again = ok(bazaar(process_env, "outbox-replay"))
    assert again == "replayed 0 dead event(s); outbox now: DEAD 0, DELIVERED 2, PENDING 4\n"


@pytest.fixture
def failures(clean_db, settings) -> Iterator[dict[str, list[uuid.UUID]]]:
    """Failed jobs of two users, newest last: three charge faults (replayable), two charge
    refusals, one fault of another type, and a succeeded charge."""
    now = utcnow().replace(microsecond=0)
    alice = User.create(username="alice_ops", password_hash="x", created_at=now)
    bob = User.create(username="bob_ops", password_hash="x", created_at=now)
    made: dict[str, list[uuid.UUID]] = {"fault": [], "refusal": [], "other": [], "ok": []}
    plan = [("fault", alice, "points.charge", "INTERNAL_ERROR"),
            ("refusal", alice, "points.charge", "INSUFFICIENT_POINTS"),
            ("fault", bob, "points.charge", "INTERNAL_ERROR"),
            ("other", bob, "orders.pay", "INTERNAL_ERROR"),
            ("refusal", bob, "points.charge", "INSUFFICIENT_POINTS"),
            ("fault", alice, "points.charge", "INTERNAL_ERROR"),
            ("ok", alice, "points.charge", None)]
    for i, (kind, user, job_type, code) in enumerate(plan):
        at = now - timedelta(minutes=len(plan) - i)
        job = Job.create(
            id=uuid.uuid4(), user=user, type=job_type,
            status="succeeded" if code is None else "failed",
            payload={"amount": 10 + i, "note": f"needle-{i}"}, request_hash="h" * 64,
            error=None if code is None else {"code": code, "message": "it went wrong"},
            result={} if code is None else None, attempts=3, sent=True,
            created_at=at, started_at=at, finished_at=at + timedelta(seconds=1))
        made[kind].append(job.id)
    yield made
    drop_messages(settings, {str(i) for ids in made.values() for i in ids}
                  | {str(j.id) for j in Job.select().where(Job.replay_of.is_null(False))})


def queued_messages(settings) -> dict[str, str]:
    """The commands queue's messages in Redis: Redis message id -> job id."""
    client = redis.Redis.from_url(settings.redis_url)
    bodies = client.hgetall(f"{dramatiq_namespace(settings)}:{COMMANDS_QUEUE}.msgs")
    return {key.decode(): json.loads(body)["message_id"] for key, body in bodies.items()}


def drop_messages(settings, job_ids: set[str]) -> None:
    """Take this test's messages out of the session's queue (no worker must run them)."""
    client = redis.Redis.from_url(settings.redis_url)
    queue = f"{dramatiq_namespace(settings)}:{COMMANDS_QUEUE}"
    for redis_id, job_id in queued_messages(settings).items():
        if job_id in job_ids:
            client.lrem(queue, 0, redis_id)
            client.hdel(f"{queue}.msgs", redis_id)


def test_jobs_failed_lists_failed_jobs_newest_first_with_filters(process_env, failures):
    # When the operator lists failed jobs
    rows, total = table(ok(bazaar(process_env, "jobs", "failed")))
    # Then every failed job is there, newest first, with its user, code and replay state
    newest_first = [failures[k][i] for k, i in (("fault", 2), ("refusal", 1), ("other", 0),
                                                ("fault", 1), ("refusal", 0), ("fault", 0))]
    assert [row[0] for row in rows] == [str(i) for i in newest_first]
    assert rows[0][1:5] == ["points.charge", "alice_ops", "INTERNAL_ERROR", "3"]
    assert rows[0][-1] == "replayable" and rows[1][-1] == "-"  # a refusal is not
    assert total == "6 failed job(s)"
    # ... and each filter narrows it
    by_code, _ = table(ok(bazaar(process_env, "jobs", "failed", "--code",
                                 "INSUFFICIENT_POINTS")))
    assert {row[0] for row in by_code} == {str(i) for i in failures["refusal"]}
    by_type, _ = table(ok(bazaar(process_env, "jobs", "failed", "--type", "orders.pay")))
    assert [row[0] for row in by_type] == [str(failures["other"][0])]
    by_text, _ = table(ok(bazaar(process_env, "jobs", "failed", "--q", "needle-2")))
    assert [row[0] for row in by_text] == [str(failures["fault"][1])]
    first_two, shown = table(ok(bazaar(process_env, "jobs", "failed", "--limit", "2")))
    assert len(first_two) == 2 and shown == "2 of 6 failed job(s)"
    none = ok(bazaar(process_env, "jobs", "failed", "--type", "no.such.type"))
    assert none == "no failed jobs\n"


def test_jobs_replay_replays_each_fault_once_and_sends_it(process_env, settings, failures):
    faults = {str(i) for i in failures["fault"]}
    before = set(queued_messages(settings).values())
    # Given a dry run, which counts only
    dry = ok(bazaar(process_env, "jobs", "replay", "--type", "points.charge", "--code",
                    "INTERNAL_ERROR", "--dry-run"))
    assert dry == "would replay 3 job(s)\n"
    assert not Job.select().where(Job.replay_of.is_null(False)).exists()
    # When the operator replays the charge faults
    out = ok(bazaar(process_env, "jobs", "replay", "--type", "points.charge", "--code",
                    "INTERNAL_ERROR"))
    # Then exactly those three are replayed: new jobs, same owner and payload, sent
    assert out == "replayed 3 job(s)\n"
    replays = list(Job.select().where(Job.replay_of.is_null(False)))
    assert {str(job.replay_of) for job in replays} == faults
    for job in replays:
        failed = Job.get_by_id(job.replay_of)
        assert (job.type, job.user_id, job.payload) == (failed.type, failed.user_id,
                                                        failed.payload)
        assert job.status == "queued" and job.sent
    # ... and their messages are in the broker's Redis queue
    sent = set(queued_messages(settings).values()) - before
    assert sent == {str(job.id) for job in replays}
    # ... the table says which job replayed each fault
    rows, _ = table(ok(bazaar(process_env, "jobs", "failed", "--code", "INTERNAL_ERROR")))
    states = {row[0]: " ".join(row[7:]) for row in rows}  # after the date and time
    for job in replays:
        assert states[str(job.replay_of)] == f"replayed by {job.id}"
    assert states[str(failures["other"][0])] == "replayable"
    # ... and a second run replays nothing, nor does a business refusal's code
    assert ok(bazaar(process_env, "jobs", "replay", "--type", "points.charge", "--code",
                     "INTERNAL_ERROR")) == "replayed 0 job(s)\n"
    refused = bazaar(process_env, "jobs", "replay", "--code", "INSUFFICIENT_POINTS")
    assert ok(refused) == "replayed 0 job(s)\n" and "INTERNAL_ERROR" in refused.stderr
    assert Job.select().where(Job.replay_of.is_null(False)).count() == 3
    assert set(queued_messages(settings).values()) - before == sent
