"""The job lifecycle: effect and outcome commit together; refusals, faults, redeliveries;
events leave only after commit, once."""

from __future__ import annotations

import itertools
import threading
import time

import msgspec
import peewee
import pytest
import redis

from db.models import Job, PointHistory
from jobs import points, records, users
from jobs.errors import DomainError
from jobs.platform import REGISTRY, Command, Domain
from tests.support import run_together
from workers import lifecycle
from workers.events import counters_key, live_pattern


class Amount(msgspec.Struct):
    amount: int


def charging(then=None, **hooks) -> Command:
    """A ``points.charge``-like command whose handler charges, emits, then runs ``then``."""

    def handler(ctx, cmd):
        result = points.charge(ctx.user_id, cmd.amount, f"job:{ctx.job.id}", ctx.now)
        ctx.emit("test.charged", {"amount": cmd.amount}, key=ctx.user_id)
        if then is not None:
            then()
        return result

    return Command("points.charge", Amount, handler, "POST", "/x", "test", **hooks)


CHARGE = charging()


@pytest.fixture
def job(rt, clock):
    uid = users.create_user("worker_owner", "x", clock.now()).id
    recorded, _ = records.record_job(uid, "points.charge", {"amount": 70}, None, clock.now())
    return recorded


@pytest.fixture
def heard(settings):
    """Every live event published during the test, as ``(channel, data)`` pairs."""
    REGISTRY.register(Domain("lifecycle-test", live_topics=frozenset({"test.charged"})))
    client = redis.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(live_pattern(settings.redis_prefix))
    got: list[tuple[str, dict]] = []

    def drain() -> list[tuple[str, dict]]:
        quiet = 0
        while quiet < 3:  # until nothing came for a while
            message = pubsub.get_message(timeout=0.1)
            if message is None:
                quiet += 1
                continue
            quiet = 0
            topic = message["channel"].decode().rsplit(":", 1)[1]
            sent = msgspec.json.decode(message["data"])
            got.extend((topic, one) for one in (sent if isinstance(sent, list) else [sent]))
        return got

    yield drain
    pubsub.close()
    client.close()
    REGISTRY.unregister("lifecycle-test")


def test_success_commits_effect_and_outcome(job, rt):
    assert lifecycle.execute_job(str(job.id), CHARGE) == "succeeded"
    stored = Job.get_by_id(job.id)
    assert (stored.status, stored.result, stored.attempts) == ("succeeded", {"balance": 70}, 1)
    assert stored.started_at is not None and stored.finished_at is not None
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}


def test_the_registered_command_runs_when_none_is_given(job, rt):
    assert lifecycle.execute_job(str(job.id)) == "succeeded"
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}


def test_redelivered_terminal_job_is_skipped(job, rt):
    lifecycle.execute_job(str(job.id), CHARGE)
    assert lifecycle.execute_job(str(job.id), CHARGE) == "skipped"
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}
    assert PointHistory.select().count() == 1


def test_events_are_published_after_commit_exactly_once_despite_a_second_delivery(job, rt,
                                                                                   heard):
    # Given a command that emits an event, delivered once and then delivered again
    assert lifecycle.execute_job(str(job.id), CHARGE) == "succeeded"
    assert lifecycle.execute_job(str(job.id), CHARGE) == "skipped"
    # Then its event and its job's status event were each published once
    events = heard()
    assert [topic for topic, _ in events].count("test.charged") == 1
    statuses = [data["data"]["status"] for topic, data in events if topic == "job"]
    assert statuses == ["succeeded"]
    job_event = next(data for topic, data in events if topic == "job")
    assert job_event["key"] == str(job.user_id)
    assert job_event["id"] == Job.get_by_id(job.id).seq


def at_once(rt, n: int, deliver) -> list[str]:
    """The outcomes of ``n`` deliveries started at the same moment, each on its thread."""
    outcomes: list[str] = []

    def one() -> None:
        with rt.database.connection_context():
            outcomes.append(deliver())

    run_together(*[one] * n)
    return outcomes


def test_two_deliveries_at_once_publish_once(job, rt, heard):
    # Given two deliveries of one job racing (the second waits on the first's row lock)
    outcomes = at_once(rt, 2, lambda: lifecycle.execute_job(str(job.id), CHARGE))
    # Then one succeeded, the effect happened once, and its event left once
    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}
    assert [topic for topic, _ in heard()].count("test.charged") == 1


def test_a_handler_raising_after_emit_publishes_nothing(job, rt, heard):
    # Given a handler that emits, then is refused
    def refuse():
        raise DomainError("MAX_BALANCE_EXCEEDED")

    # When it runs
    assert lifecycle.execute_job(str(job.id), charging(then=refuse)) == "failed"
    # Then the effect is rolled back and its event never left; only the failure is told
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}
    events = heard()
    assert [topic for topic, _ in events] == ["job"]
    assert events[0][1]["data"]["status"] == "failed"


def test_a_crash_after_emit_publishes_nothing_either(job, rt, heard):
    def crash():
        raise KeyError("oops")

    assert lifecycle.execute_job(str(job.id), charging(then=crash)) == "failed"
    assert [topic for topic, _ in heard()] == ["job"]


def test_refusal_fails_at_once_and_rolls_back(job, rt):
    def refuse():
        raise DomainError("MAX_BALANCE_EXCEEDED")

    assert lifecycle.execute_job(str(job.id), charging(then=refuse)) == "failed"
    stored = Job.get_by_id(job.id)
    assert stored.status == "failed"
    assert stored.error["code"] == "MAX_BALANCE_EXCEEDED"
    assert stored.started_at is not None  # (its start rolled back with the effect)
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_transient_fault_is_raised_for_retry_then_fails(job, rt, monkeypatch):
    def flaky():
        raise peewee.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: 0)
    with pytest.raises(peewee.OperationalError):
        lifecycle.execute_job(str(job.id), charging(then=flaky))
    # (the start rolled back with the rest; the delivery was counted outside it)
    assert Job.get_by_id(job.id).status == "queued"
    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: rt.settings.job_max_retries)
    assert lifecycle.execute_job(str(job.id), charging(then=flaky)) == "failed"
    stored = Job.get_by_id(job.id)
    assert (stored.error["code"], stored.attempts) == ("INTERNAL_ERROR", 2)
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_a_gate_that_loses_redis_is_retried_then_fails(job, rt, monkeypatch):
    def gate(ctx, payload):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: 0)
    with pytest.raises(redis.ConnectionError):
        lifecycle.execute_job(str(job.id), charging(gate=gate))
    assert Job.get_by_id(job.id).status == "queued"
    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: rt.settings.job_max_retries)
    assert lifecycle.execute_job(str(job.id), charging(gate=gate)) == "failed"
    stored = Job.get_by_id(job.id)
    assert stored.error == {"code": "INTERNAL_ERROR", "message": "a dependency kept failing"}
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_a_bug_fails_the_job_without_retry(job, rt):
    def broken():
        raise KeyError("oops")

    assert lifecycle.execute_job(str(job.id), charging(then=broken)) == "failed"
    assert Job.get_by_id(job.id).error == {"code": "INTERNAL_ERROR", "message": "internal error"}


def test_a_stored_payload_that_no_longer_fits_its_schema_fails_the_job(rt, clock):
    uid = users.create_user("odd_payload", "x", clock.now()).id
    odd, _ = records.record_job(uid, "points.charge", {"amount": "seventy"}, None, clock.now())
    assert lifecycle.execute_job(str(odd.id), CHARGE) == "failed"
    assert Job.get_by_id(odd.id).error["code"] == "INTERNAL_ERROR"


def test_a_job_that_keeps_killing_workers_is_given_up(job, rt):
    # Given a job delivered as many times as allowed (each delivery died mid-way)
    for _ in range(rt.settings.job_max_deliveries):
        rt.publisher.count_delivery(str(job.id))
    # When it is delivered once more
    outcome = lifecycle.execute_job(str(job.id), CHARGE)
    # Then it fails instead of running again
    assert outcome == "failed"
    assert Job.get_by_id(job.id).error["code"] == "INTERNAL_ERROR"
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_a_job_retried_through_a_long_outage_is_not_given_up(job, rt, monkeypatch):
    # Given a job delivered more often than allowed, every delivery so far ending in a
    # retry (the database was down for a minute): none of them killed its worker
    retries = rt.settings.job_max_deliveries + 4
    for _ in range(retries):
        rt.publisher.count_delivery(str(job.id))
    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: retries)
    # When it is delivered once more, the database back, then it runs
    assert lifecycle.execute_job(str(job.id), CHARGE) == "succeeded"
    assert Job.get_by_id(job.id).attempts == retries + 1
    assert points.balance(job.user_id)["balance"] > 0


def test_deliveries_that_died_inside_their_transaction_still_count(job, rt):
    # Given deliveries that each died mid-job: counted, their transactions rolled back
    for _ in range(rt.settings.job_max_deliveries):
        rt.publisher.count_delivery(str(job.id))
    assert Job.get_by_id(job.id).attempts == 0
    # When it is delivered once more, then it is given up, and counted as delivered
    assert lifecycle.execute_job(str(job.id), CHARGE) == "failed"
    stored = Job.get_by_id(job.id)
    assert stored.error["message"] == "gave up after repeated deliveries"
    assert stored.attempts == rt.settings.job_max_deliveries + 1
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}
    # ... and the count is forgotten once the job is terminal
    assert not rt.redis.hexists(f"{rt.settings.redis_prefix}:deliveries", str(job.id))


def test_outcomes_are_counted_for_metrics(job, rt):
    rt.redis.delete(counters_key(rt.settings.redis_prefix))
    lifecycle.execute_job(str(job.id), CHARGE)
    counts = rt.redis.hgetall(counters_key(rt.settings.redis_prefix))
    assert counts[b"points.charge|succeeded"] == b"1"


def test_a_job_failed_for_good_runs_its_give_up_hook_once(job, rt, monkeypatch):
    undone: list[tuple[str, str]] = []

    def broken():
        raise peewee.OperationalError("the database keeps failing")

    command = charging(then=broken,
                       give_up=lambda ctx, cmd, code: undone.append((str(ctx.job.id), code)))
    monkeypatch.setattr(lifecycle, "_retries_so_far", lambda: rt.settings.job_max_retries)
    assert lifecycle.execute_job(str(job.id), command) == "failed"
    assert lifecycle.execute_job(str(job.id), command) == "skipped"
    assert undone == [(str(job.id), "INTERNAL_ERROR")]


def test_a_refusal_runs_the_give_up_hook_after_the_failure_commits(job, rt):
    seen: list[str] = []

    def refuse():
        raise DomainError("MAX_BALANCE_EXCEEDED")

    def give_up(ctx, cmd, code):
        seen.append(f"{code}:{Job.get_by_id(ctx.job.id).status}")

    lifecycle.execute_job(str(job.id), charging(then=refuse, give_up=give_up))
    assert seen == ["MAX_BALANCE_EXCEEDED:failed"]


def test_a_delivery_that_cannot_reach_the_database_is_retried_until_it_can(settings):
    # (dead-lettering it would leave its job queued and marked sent, where no sweep looks)
    from dataclasses import replace

    from dramatiq.middleware import Retries

    from workers.broker import build_broker

    broker = build_broker(replace(settings, redis_url=None))
    [retries] = [m for m in broker.middleware if isinstance(m, Retries)]
    many = settings.job_max_retries + 100
    assert retries.retry_when(many, peewee.OperationalError("the server is gone"))
    assert retries.retry_when(many, peewee.InterfaceError("connection already closed"))
    assert not retries.retry_when(many, KeyError("a bug"))
    assert retries.retry_when(0, KeyError("a bug"))


# -- a message that carries its job (what the door sends): no read before the effect -----

def carried(job: Job, command: Command = CHARGE) -> str:
    """One delivery of ``job``'s message as the door sends it (user and payload in it)."""
    return lifecycle.execute_job(str(job.id), command, user_id=job.user_id,
                                 payload=job.payload)


def test_a_carried_job_commits_its_effect_and_outcome_and_counts_its_delivery(job, rt):
    assert carried(job) == "succeeded"
    stored = Job.get_by_id(job.id)
    assert (stored.status, stored.result, stored.attempts) == ("succeeded", {"balance": 70}, 1)
    assert stored.started_at is not None and stored.finished_at is not None
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}


def test_a_carried_redelivery_of_a_terminal_job_rolls_its_effect_back(job, rt, heard):
    assert carried(job) == "succeeded"
    assert carried(job) == "skipped"
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}
    assert PointHistory.select().count() == 1
    assert Job.get_by_id(job.id).attempts == 1  # the rolled-back delivery wrote nothing
    assert [topic for topic, _ in heard()].count("test.charged") == 1


def test_two_carried_deliveries_at_once_apply_once(job, rt, heard):
    # Given many deliveries of one job racing, none reading the row first
    outcomes = at_once(rt, 6, lambda: carried(job))
    # Then exactly one succeeded, its effect happened once, and its event left once
    assert sorted(outcomes) == ["skipped"] * 5 + ["succeeded"]
    assert points.balance(job.user_id) == {"balance": 70, "held": 0}
    assert PointHistory.select().count() == 1
    assert [topic for topic, _ in heard()].count("test.charged") == 1


def test_a_carried_job_whose_row_is_gone_applies_nothing(job, rt):
    Job.delete().where(Job.id == job.id).execute()  # (withdrawn: its send had failed)
    assert carried(job) == "skipped"
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_a_carried_refusal_of_a_terminal_job_is_skipped_without_give_up(job, rt):
    undone: list[str] = []

    def refuse():
        raise DomainError("MAX_BALANCE_EXCEEDED")

    command = charging(then=refuse, give_up=lambda ctx, cmd, code: undone.append(code))
    assert carried(job) == "succeeded"
    assert carried(job, command) == "skipped"
    assert undone == [] and Job.get_by_id(job.id).status == "succeeded"


def test_a_gated_command_reads_its_row_even_when_carried(job, rt):
    # (the gate acts outside the transaction: it must not act for a finished job)
    gated: list[str] = []
    command = charging(gate=lambda ctx, payload: gated.append(str(ctx.job.id)))
    assert carried(job, command) == "succeeded"
    assert carried(job, command) == "skipped"
    assert gated == [str(job.id)]


def test_a_carried_job_that_keeps_killing_workers_is_given_up(job, rt):
    for _ in range(rt.settings.job_max_deliveries):
        rt.publisher.count_delivery(str(job.id))
    assert carried(job) == "failed"
    assert Job.get_by_id(job.id).error["message"] == "gave up after repeated deliveries"
    assert points.balance(job.user_id) == {"balance": 0, "held": 0}


def test_a_large_batch_of_notices_leaves_in_one_call(rt):
    from workers.events import Publisher

    # Given more finished jobs queued up than Lua's unpack takes at once
    key = f"{rt.settings.redis_prefix}:deliveries"
    counters = counters_key(rt.settings.redis_prefix)
    before = int(rt.redis.hget(counters, "points.charge|succeeded") or 0)
    ids = [f"job-{n}" for n in range(2500)]
    rt.redis.hset(key, mapping=dict.fromkeys([*ids, "unfinished"], 1))
    publisher = Publisher(rt.redis, rt.settings.redis_prefix)
    publisher._thread = threading.current_thread()  # (queue only, as the thread's caller)
    for job_id in ids:
        publisher.publish((), "points.charge", "succeeded", 0.02, job_id)
    # When they are flushed, then all of it was said in the one call
    publisher.flush()
    left = set(rt.redis.hkeys(key))
    assert b"unfinished" in left and not left & {i.encode() for i in ids}
    assert int(rt.redis.hget(counters, "points.charge|succeeded")) == before + 2500


def test_the_publisher_thread_sends_a_quiet_notice_at_once_and_a_stream_in_batches(rt):
    from workers.events import FLUSH_INTERVAL, Publisher

    publisher = Publisher(rt.redis, rt.settings.redis_prefix)
    calls: list[float] = []
    send = publisher.flush

    def flush() -> None:
        calls.append(time.monotonic())
        send()

    publisher.flush = flush
    publisher.start()
    time.sleep(0.05)
    # Given a quiet publisher, a notice leaves well before the batching interval
    waits = []
    for _ in range(3):  # (the best of three: a loaded machine may oversleep once)
        calls.clear()
        began = time.monotonic()
        publisher.publish((), "points.charge", "succeeded", 0.01, "quiet")
        while not calls and time.monotonic() < began + 5:
            time.sleep(0.0005)
        waits.append(calls[0] - began)
        time.sleep(2 * FLUSH_INTERVAL)
    assert min(waits) < FLUSH_INTERVAL
    # When notices stream in (one every half millisecond for a quarter of a second)
    time.sleep(0.05)
    calls.clear()
    began = time.monotonic()
    while time.monotonic() - began < 0.25:
        publisher.publish((), "points.charge", "succeeded", 0.01, "busy")
        time.sleep(0.0005)
    time.sleep(0.05)
    # Then they leave in batches at least the interval apart, not one call each
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert 0 < len(calls) <= 0.3 / FLUSH_INTERVAL + 1
    assert min(gaps) >= FLUSH_INTERVAL * 0.9


def test_a_jobs_outbox_event_is_written_with_its_finish_once(job, rt):
    from db.models import OutboxEvent

    def handler(ctx, cmd):
        result = points.charge(ctx.user_id, cmd.amount, f"job:{ctx.job.id}", ctx.now)
        ctx.emit("order.paid", {"order_id": 1, "amount": cmd.amount})
        assert OutboxEvent.select().count() == before  # (waits for the finish)
        return result

    before = OutboxEvent.select().count()
    command = Command("points.charge", Amount, handler, "POST", "/x", "test")
    assert carried(job, command) == "succeeded"
    assert carried(job, command) == "skipped"  # (its event rolled back with the rest)
    events = list(OutboxEvent.select().order_by(OutboxEvent.id))[before:]
    assert [(e.topic, e.payload, e.status) for e in events] == [
        ("order.paid", {"order_id": 1, "amount": 70}, "PENDING")]


def test_a_crash_is_logged_once_and_not_for_a_redelivery_of_a_finished_job(job, rt, caplog):
    def broken():
        raise KeyError("oops")

    assert carried(job) == "succeeded"
    assert carried(job, charging(then=broken)) == "skipped"  # (a finished job: no crash)
    assert "job crashed" not in caplog.messages
    other, _ = records.record_job(job.user_id, "points.charge", {"amount": 5}, None,
                                  rt.clock.now())
    assert carried(other, charging(then=broken)) == "failed"
    crashes = [r for r in caplog.records if r.getMessage() == "job crashed"]
    assert len(crashes) == 1 and crashes[0].exc_info[0] is KeyError
