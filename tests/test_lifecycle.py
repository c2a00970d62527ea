"""The job lifecycle: effect and outcome commit together; refusals, faults, redeliveries."""

from __future__ import annotations

import peewee
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from db.models import Job, PointHistory
from jobs import points, records, users
from jobs.errors import DomainError
from workers import lifecycle, runtime
from workers.coupon_gate import CouponGate
from workers.events import JobEvents, counters_key
from workers.sinks import LogSink


@pytest.fixture
def rt(clean_db, settings, clock):
    client = redis.Redis.from_url(settings.redis_url)
    installed = runtime.Runtime(
        settings=settings,
        database=clean_db,
        redis=client,
        broker=StubBroker(),
        clock=clock,
        events=JobEvents(client, settings.redis_prefix),
        coupon_gate=CouponGate(client, settings.redis_prefix),
        sink=LogSink(),
    )
    runtime.install(installed)
    yield installed
    client.delete(counters_key(settings.redis_prefix))


@pytest.fixture
def job(rt, clock):
    uid = users.create_user("worker_owner", "x", clock.now()).id
    recorded, _ = records.record_job(uid, "points.charge", {"amount": 70}, None, clock.now())
    return recorded


def charge(job, rt):
    return points.charge(job.user_id, job.payload["amount"], f"job:{job.id}", rt.clock.now())


def test_success_commits_effect_and_outcome(job, rt):
    assert lifecycle.execute_job(str(job.id), charge) == "succeeded"
    stored = Job.get_by_id(job.id)
    assert (stored.status, stored.result, stored.attempts) == ("succeeded", {"balance": 70}, 1)
    assert stored.started_at is not None and stored.finished_at is not None
    assert points.balance(job.user_id) == {"balance": 70}


def test_redelivered_terminal_job_is_skipped(job, rt):
    lifecycle.execute_job(str(job.id), charge)
    assert lifecycle.execute_job(str(job.id), charge) == "skipped"
    assert points.balance(job.user_id) == {"balance": 70}
    assert PointHistory.select().count() == 1


def test_refusal_fails_at_once_and_rolls_back(job, rt):
    def charge_then_refuse(job, rt):
        charge(job, rt)
        raise DomainError("MAX_BALANCE_EXCEEDED")

    assert lifecycle.execute_job(str(job.id), charge_then_refuse) == "failed"
    stored = Job.get_by_id(job.id)
    assert stored.status == "failed"
    assert stored.error["code"] == "MAX_BALANCE_EXCEEDED"
    assert points.balance(job.user_id) == {"balance": 0}


def test_transient_fault_is_raised_for_retry_then_fails(job, rt, monkeypatch):
    def flaky(job, rt):
        charge(job, rt)
        raise peewee.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: 0)
    with pytest.raises(peewee.OperationalError):
        lifecycle.execute_job(str(job.id), flaky)
    assert Job.get_by_id(job.id).status == "running"
    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: rt.settings.job_max_retries)
    assert lifecycle.execute_job(str(job.id), flaky) == "failed"
    stored = Job.get_by_id(job.id)
    assert (stored.error["code"], stored.attempts) == ("INTERNAL_ERROR", 2)
    assert points.balance(job.user_id) == {"balance": 0}


def test_a_bug_fails_the_job_without_retry(job, rt):
    def broken(job, rt):
        raise KeyError("oops")

    assert lifecycle.execute_job(str(job.id), broken) == "failed"
    assert Job.get_by_id(job.id).error == {"code": "INTERNAL_ERROR", "message": "internal error"}


def test_a_job_that_keeps_killing_workers_is_given_up(job, rt):
    # Given a job delivered as many times as allowed (each delivery died mid-way)
    for _ in range(rt.settings.job_max_deliveries):
        records.start_job(job.id, rt.clock.now())
    # When it is delivered once more
    outcome = lifecycle.execute_job(str(job.id), charge)
    # Then it fails instead of running again
    assert outcome == "failed"
    assert Job.get_by_id(job.id).error["code"] == "INTERNAL_ERROR"
    assert points.balance(job.user_id) == {"balance": 0}


def test_outcomes_are_counted_for_metrics(job, rt):
    lifecycle.execute_job(str(job.id), charge)
    counts = rt.redis.hgetall(counters_key(rt.settings.redis_prefix))
    assert counts[b"points.charge|succeeded"] == b"1"


def test_a_job_failed_for_good_runs_its_give_up_hook_once(job, rt, monkeypatch):
    undone: list[str] = []

    def broken(job, rt):
        raise peewee.OperationalError("the database keeps failing")

    def give_up(job, rt):
        undone.append(str(job.id))

    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: rt.settings.job_max_retries)
    assert lifecycle.execute_job(str(job.id), broken, give_up=give_up) == "failed"
    assert lifecycle.execute_job(str(job.id), broken, give_up=give_up) == "skipped"
    assert undone == [str(job.id)]


def test_a_refusal_does_not_run_the_give_up_hook(job, rt):
    undone: list[str] = []

    def refuse(job, rt):
        raise DomainError("MAX_BALANCE_EXCEEDED")

    lifecycle.execute_job(str(job.id), refuse, give_up=lambda job, rt: undone.append("x"))
    assert undone == []
