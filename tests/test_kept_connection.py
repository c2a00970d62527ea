"""A worker thread keeps its database connection from one job to the next, and gives
back one that failed: the next unit of work runs on a fresh connection."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import peewee
import psycopg2
import pytest

from db.connection import kept_connection
from jobs import points, records, users
from workers.lifecycle import execute_job


def backend(db) -> int:
    return db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


def in_a_thread(work):
    """``work()`` on a fresh thread (its own connection state): its result, or its raise."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result(timeout=30)


def test_units_of_work_on_one_thread_share_its_connection(database):
    def work():
        with kept_connection(database):
            first = backend(database)
        open_between = not database.is_closed()
        with kept_connection(database), database.atomic():
            second = backend(database)
        database.close()
        return first, open_between, second

    first, open_between, second = in_a_thread(work)
    assert open_between and first == second


def test_a_connection_the_server_dropped_fails_one_call_then_is_replaced(database,
                                                                         database_url):
    def work():
        with kept_connection(database):
            lost = backend(database)
        with psycopg2.connect(database_url) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (lost,))
        with pytest.raises(peewee.OperationalError), kept_connection(database):
            backend(database)  # the call that meets the dead connection fails...
        with kept_connection(database):
            fresh = backend(database)  # ...and the next unit of work gets a new one
        database.close()
        return lost, fresh

    lost, fresh = in_a_thread(work)
    assert fresh != lost


def test_the_lifecycle_runs_a_worker_threads_jobs_on_one_connection(rt, clock):
    user = users.create_user("kept", "x", clock.now()).id
    rt.keep_connections = True
    jobs = [records.record_job(user, "points.charge", {"amount": 5}, None, clock.now())[0]
            for _ in range(3)]
    seen = []

    def work():
        for job in jobs:
            assert execute_job(str(job.id), job_type="points.charge") == "succeeded"
            seen.append((rt.database.is_closed(), backend(rt.database)))
        rt.database.close()

    in_a_thread(work)
    assert [closed for closed, _ in seen] == [False] * 3  # kept open between jobs
    assert len({pid for _, pid in seen}) == 1
    assert points.balance(user)["balance"] == 15


def test_threads_run_together_give_back_the_connections_they_opened(database):
    from db.connection import database as bound
    from tests.support import run_together

    bound.initialize(database)  # (a stack of an earlier test may have bound another)
    before = len(database._in_use)
    # When 5 threads each run a query (peewee opens a connection on the thread's first)
    run_together(*[lambda: backend(database) for _ in range(5)])
    # Then none is still checked out: a thread that ends holding one keeps it for good
    assert len(database._in_use) == before
