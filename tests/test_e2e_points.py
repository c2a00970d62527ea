"""End to end through real web and worker processes: load, idempotency, a killed worker."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from db.models import Job, PointHistory, PointWallet, User
from tests.loadclient import post_many, wait_all
from tests.support import Stack

pytestmark = pytest.mark.e2e


def balances_agree_with_history(database, usernames: list[str]) -> dict[str, int]:
    """Each user's balance, checked against the sum of their history."""
    out = {}
    with database.connection_context():
        for name in usernames:
            user = User.get(User.username == name)
            balance = PointWallet.get(PointWallet.user == user.id).balance
            total = sum(h.amount for h in PointHistory.select().where(PointHistory.user == user.id))
            assert balance == total, name
            out[name] = balance
    return out


@pytest.fixture(scope="module")
def big_stack(process_env):
    s = Stack(process_env)
    s.start_worker(processes=2, threads=8)
    s.start_web()
    yield s
    s.stop()


def test_1000_concurrent_charges_from_50_users(big_stack, database):
    # Given 50 users
    api = big_stack.api
    names = [f"load_{n}" for n in range(50)]
    tokens = {name: api.signup_login(name) for name in names}
    # When they send 1,000 charges of 100 at once (20 each)
    requests = [
        ("/points/charge", {"amount": 100}, {"Authorization": f"Bearer {tokens[name]}"})
        for _ in range(20)
        for name in names
    ]
    replies = asyncio.run(post_many(api.base, requests, concurrency=200))
    # Then every one is accepted, every job succeeds, and each balance is exact
    assert Counter(status for status, _ in replies) == {202: 1000}
    owners = [r[2]["Authorization"].removeprefix("Bearer ") for r in requests]
    jobs = asyncio.run(wait_all(api.base, [(b["id"], t) for (_, b), t in
                                           zip(replies, owners, strict=True)]))
    assert Counter(job["status"] for job in jobs) == {"succeeded": 1000}
    assert balances_agree_with_history(database, names) == {name: 2000 for name in names}


def test_one_idempotency_key_sent_20_times_concurrently(big_stack, database):
    api = big_stack.api
    token = api.signup_login("idem_user")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "charge-once-please"}
    replies = asyncio.run(
        post_many(api.base, [("/points/charge", {"amount": 700}, headers)] * 20, concurrency=20)
    )
    assert {status for status, _ in replies} <= {200, 202}
    assert len({body["id"] for _, body in replies}) == 1
    job = api.wait_job(replies[0][1]["id"], token)
    assert job["status"] == "succeeded"
    assert api.get("/points", token=token).body == {"balance": 700, "held": 0}
    with database.connection_context():
        user = User.get(User.username == "idem_user")
        assert Job.select().where(Job.user == user.id).count() == 1
        assert PointHistory.select().where(PointHistory.user == user.id).count() == 1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_worker_killed_mid_stream_loses_nothing_and_doubles_nothing(process_env, database, sig):
    # Given a stack whose one worker process group will be signalled (as a Procfile host
    # or systemd would: the whole group at once), on a key space of its own so that no
    # other worker (this module's big_stack) drains its queue
    own_prefix = f"{process_env['REDIS_PREFIX']}-crash-{sig.name}"
    stack = Stack({**process_env, "REDIS_PREFIX": own_prefix})
    stack.start_web()
    stack.start_worker(name="doomed", processes=1, threads=8)
    try:
        api = stack.api
        names = [f"crash_{sig.name}_{n}" for n in range(10)]
        tokens = {name: api.signup_login(name) for name in names}
        requests = [
            ("/points/charge", {"amount": 1 + n % 7}, {"Authorization": f"Bearer {tokens[name]}"})
            for n in range(50)
            for name in names
        ]

        # When 500 charges stream in and the worker is killed part-way through
        async def stream() -> list:
            first = await post_many(api.base, requests[:200], concurrency=50)
            await asyncio.sleep(0.05)
            stack.kill("doomed", sig)
            rest = await post_many(api.base, requests[200:], concurrency=50)
            return first + rest

        replies = asyncio.run(stream())
        assert Counter(status for status, _ in replies) == {202: 500}
        with database.connection_context():
            unfinished = Job.select().where(Job.status.in_(["queued", "running"])).count()
        assert unfinished > 0, "the kill came too late to interrupt anything"
        # ... and a new worker is started
        stack.start_worker(name="replacement", processes=1, threads=8)
        owners = [r[2]["Authorization"].removeprefix("Bearer ") for r in requests]
        jobs = asyncio.run(wait_all(api.base, [(b["id"], t) for (_, b), t in
                                               zip(replies, owners, strict=True)], timeout=90))
        # Then every accepted job ends succeeded, and every charge is applied exactly once
        assert Counter(job["status"] for job in jobs) == {"succeeded": 500}
        expected = Counter()
        for path_body_headers in requests:
            name = next(n for n, t in tokens.items() if path_body_headers[2]["Authorization"]
                        == f"Bearer {t}")
            expected[name] += path_body_headers[1]["amount"]
        assert balances_agree_with_history(database, names) == dict(expected)
    finally:
        stack.stop()


def test_two_schedulers_fire_each_slot_once(process_env, database, settings):
    # Given two schedulers and a worker, with a 1-second periodic task
    import redis

    stack = Stack({**process_env, "RESEND_INTERVAL": "1"})
    stack.start_worker(processes=1, threads=4)
    started = int(time.time())
    stack.start_scheduler("scheduler_a")
    stack.start_scheduler("scheduler_b")
    client = redis.Redis.from_url(settings.redis_url)

    def dispatched() -> dict[int, int]:
        return {int(k.decode().split(":")[1]): int(v) for k, v in client.hgetall(
            f"{settings.redis_prefix}:scheduler:dispatched").items()
            if k.decode().startswith("jobs.resend:") and int(k.decode().split(":")[1]) >= started}

    def ran() -> list[int]:
        with database.connection_context():
            return [r for (r,) in database.execute_sql(
                "SELECT slot FROM periodic_runs WHERE schedule_id = 'jobs.resend' AND slot >= %s"
                " ORDER BY slot", (started,)).fetchall()]

    try:
        # When they run for a while, and one of them dies part-way
        time.sleep(4)
        stack.kill("scheduler_a")
        killed_at = time.time()
        # (killed in the middle of a tick, it holds rq-scheduler's lock until the lock
        # expires: the tick interval + 10 s; the survivor dispatches once it is gone)
        deadline = time.monotonic() + 4 + 1 + 10
        while time.monotonic() < deadline and (
                time.time() < killed_at + 4
                or sum(slot > killed_at + 1 for slot in dispatched()) < 2):
            time.sleep(0.2)
        stack.kill("scheduler_b")
        deadline = time.monotonic() + 15
        while set(ran()) != set(dispatched()) and time.monotonic() < deadline:
            time.sleep(0.2)  # let the worker finish what was dispatched
    finally:
        stack.stop()
    # Then each slot was dispatched once and ran once, and dispatching went on after the kill
    sent = dispatched()
    assert len(sent) >= 5, sent
    assert set(sent.values()) == {1}, sent
    assert ran() == sorted(sent)
    assert any(slot > killed_at + 1 for slot in sent), "no dispatch after the failover"
