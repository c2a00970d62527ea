"""Recovery: dropped database connections, a broker that lost its data, an unsent job."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
import redis

from db.models import Job, PointHistory, PointWallet, User
from jobs import records
from jobs.clock import utcnow
from tests.conftest import process_stack
from tests.loadclient import post_many, wait_all
from tests.support import Stack


@pytest.fixture(scope="module")
def stack(process_env):
    """Real processes: this module's tests need them."""
    yield from process_stack(process_env)

pytestmark = pytest.mark.e2e


def charge_requests(api, prefix: str, users: int, per_user: int) -> tuple[dict, list]:
    tokens = {f"{prefix}_{n}": api.signup_login(f"{prefix}_{n}") for n in range(users)}
    requests = [
        ("/points/charge", {"amount": 10}, {"Authorization": f"Bearer {token}"})
        for _ in range(per_user)
        for token in tokens.values()
    ]
    return tokens, requests


def accepted_jobs(replies, requests) -> list[tuple[str, str]]:
    return [
        (body["id"], req[2]["Authorization"].removeprefix("Bearer "))
        for (status, body), req in zip(replies, requests, strict=True)
        if status == 202
    ]


def assert_each_success_applied_once(database, usernames) -> None:
    with database.connection_context():
        for name in usernames:
            user = User.get(User.username == name)
            succeeded = Job.select().where((Job.user == user.id) & (Job.status == "succeeded"))
            expected = sum(job.payload["amount"] for job in succeeded)
            balance = PointWallet.get(PointWallet.user == user.id).balance
            history = sum(h.amount for h in PointHistory.select().where(
                PointHistory.user == user.id))
            assert balance == history == expected, name


def test_dropped_database_connections_lose_nothing(stack, database, database_url):
    # Given a stream of charges
    api = stack.api
    tokens, requests = charge_requests(api, "dropped", 10, 30)
    dbname = database_url.rsplit("/", 1)[1]

    async def stream_while_dropping() -> list:
        sending = asyncio.create_task(post_many(api.base, requests, concurrency=30))
        for _ in range(4):  # When every server connection is cut, several times over
            await asyncio.sleep(0.15)
            with database.connection_context():
                database.execute_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        return await sending

    replies = asyncio.run(stream_while_dropping())
    database.close_all()  # this process's idle pooled connections were cut too
    statuses = Counter(status for status, _ in replies)
    # Then a command is either refused (503, not accepted) or accepted and finished once
    assert set(statuses) <= {202, 503}, statuses
    assert statuses[202] > 0
    jobs = asyncio.run(wait_all(api.base, accepted_jobs(replies, requests), timeout=60))
    outcomes = Counter((j["status"], (j["error"] or {}).get("code")) for j in jobs)
    assert set(outcomes) <= {("succeeded", None), ("failed", "INTERNAL_ERROR")}, outcomes
    assert outcomes[("succeeded", None)] >= 0.9 * len(jobs), outcomes
    with database.connection_context():
        refused = Job.select().where(Job.status.in_(["queued", "running"])).count()
    assert refused == 0
    assert_each_success_applied_once(database, list(tokens))


def test_lost_broker_data_and_unsent_jobs_are_resent(process_env, database, settings):
    # Given accepted charges waiting in the broker (no worker yet) ...
    stack = Stack(process_env)
    stack.start_web()
    try:
        api = stack.api
        tokens, requests = charge_requests(api, "lostq", 5, 20)
        replies = asyncio.run(post_many(api.base, requests, concurrency=20))
        assert Counter(status for status, _ in replies) == {202: 100}
        # ... plus a job recorded long ago whose message never reached the broker
        owner = next(iter(tokens))
        with database.connection_context():
            user_id = User.get(User.username == owner).id
            orphan, _ = records.record_job(user_id, "points.charge", {"amount": 10}, None,
                                           utcnow() - timedelta(minutes=1))
        # When Redis loses everything of the broker (as a restart does here)
        client = redis.Redis.from_url(settings.redis_url)
        lost = [*client.scan_iter(match=f"{settings.redis_prefix}:dramatiq*"),
                f"{settings.redis_prefix}:broker-epoch"]
        client.delete(*lost)
        # ... and a worker and the scheduler start
        stack.start_worker(processes=1, threads=8)
        stack.start_scheduler()
        jobs = asyncio.run(wait_all(api.base, accepted_jobs(replies, requests), timeout=60))
        # Then every accepted job, and the orphan, succeed exactly once
        assert Counter(job["status"] for job in jobs) == {"succeeded": 100}
        assert api.wait_job(str(orphan.id), tokens[owner])["status"] == "succeeded"
        assert_each_success_applied_once(database, list(tokens))
    finally:
        stack.stop()
