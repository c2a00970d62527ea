"""Fixtures: a PostgreSQL database and a Redis key space per test session, cleaned up after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import peewee
import psycopg2
import pytest
import redis

from db.connection import connect_database
from db.migrate import migrate
from db.settings import Settings
from jobs.clock import FixedClock, utcnow
from jobs.platform import load_domains
from tests.inprocess import InProcessStack
from tests.support import Stack

pytest_plugins = ["tests.browser"]  # the `browser` fixture

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODELS = peewee.sort_models(load_domains().models())  # each after those it refers to


def _admin():
    conn = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session; dropped afterwards."""
    name = f"bazaar_test_{uuid.uuid4().hex[:12]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = f"postgresql://{PG_USER}@{PG_HOST}:5432/{name}"
    db = connect_database(url, 4)
    migrate(db)
    db.close_all()
    yield url
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A Redis key space of this session; its keys are deleted afterwards."""
    prefix = f"bzt-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def settings(database_url: str, redis_prefix: str) -> Settings:
    """Settings pointing at the session's database and key space."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        jwt_secret="test-secret-not-for-production-use-0123",
        scrypt_n=2**10,
        secure_cookies=False,
        db_pool_size=8,
    )


@pytest.fixture(scope="session")
def process_env(settings: Settings) -> dict[str, str]:
    """The environment of the session's Bazaar processes."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "REDIS_PREFIX": settings.redis_prefix,
        "JWT_SECRET": settings.jwt_secret,
        "SCRYPT_N": str(settings.scrypt_n),
        "SECURE_COOKIES": "false",
        "LOG_LEVEL": "WARNING",
        "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
        "BROKER_MAINTENANCE_INTERVAL": "0.5",
        "RESEND_INTERVAL": "2",
        "JOB_RESEND_AFTER": "5",
        "DB_POOL_SIZE": "8",
        # every test logs in from 127.0.0.1: the address budget is tested on its own
        "LOGIN_FAIL_LIMIT_ADDRESS": "1000000",
    }


@pytest.fixture(scope="session")
def database(database_url: str):
    """The models bound to the session database."""
    return connect_database(database_url, 24)


@pytest.fixture(scope="session")
def emptying(database) -> str:
    """One query string that empties every table and restarts the sequences they own, as
    ``TRUNCATE ... RESTART IDENTITY`` would: at a seventh of its time here (14 against 100
    ms for 28 small tables: a truncation makes new files for each table and index)."""
    deletes = [f'DELETE FROM "{model._meta.table_name}"' for model in reversed(MODELS)]
    owned = database.execute_sql(
        "SELECT s.oid::regclass::text FROM pg_class s JOIN pg_depend d ON d.objid = s.oid"
        " WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') ORDER BY 1").fetchall()
    restarts = [f"ALTER SEQUENCE {name} RESTART" for (name,) in owned]
    return "; ".join(deletes + restarts)


@pytest.fixture
def clean_db(database, emptying: str) -> Iterator:
    """An empty schema before and after the test."""
    database.execute_sql(emptying)
    yield database
    database.execute_sql(emptying)


@pytest.fixture
def clock() -> FixedClock:
    """A clock the test moves by hand."""
    return FixedClock(utcnow().replace(microsecond=0))


def process_stack(env: dict[str, str]) -> Iterator[Stack]:
    """Real ``bazaar web`` and ``bazaar worker`` processes (for crash and recovery tests:
    a module overrides ``stack`` with ``yield from process_stack(process_env)``)."""
    s = Stack(env)
    s.start_worker(processes=1, threads=8)
    s.start_web()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stack(process_env: dict[str, str]) -> Iterator[InProcessStack]:
    """The web app and a worker, in this process, for the module's contract tests."""
    s = InProcessStack(process_env)
    s.start_worker(processes=1, threads=8)
    s.start_web()
    yield s
    s.stop()


@pytest.fixture
def no_waiting_rooms(settings) -> Iterator[None]:
    """No waiting room before or after the test. Concert ids restart with the tables, and
    the session's Redis prefix outlives them: a line left by an earlier test (in whatever
    order the test processes take the modules) would be this test's line too."""
    client = redis.Redis.from_url(settings.redis_url)

    def drop() -> None:
        for key in client.scan_iter(match=f"{settings.redis_prefix}:queue:*", count=1000):
            client.delete(key)

    drop()
    yield
    drop()
    client.close()


@pytest.fixture
def rt(clean_db, no_waiting_rooms, settings, clock) -> Iterator:
    """The worker runtime on the session's database and Redis, with a stub broker."""
    import itertools

    from dramatiq.brokers.stub import StubBroker

    from workers import runtime
    from workers.bootstrap import make_runtime

    client = redis.Redis.from_url(settings.redis_url)
    installed = make_runtime(settings, client, clean_db, StubBroker(), clock)
    installed.slots = itertools.count(1)
    runtime.install(installed)
    yield installed
    client.close()


def run_task(rt, task_id: str) -> dict:
    """Run a periodic task through the lifecycle, in a fresh slot; what it reported."""
    from workers.lifecycle import run_periodic

    result = run_periodic(task_id, next(rt.slots))
    assert result is not None, f"{task_id} did not run"
    return result
