"""CPU per job of a worker thread's own work, outside Dramatiq: the part Bazaar adds.

Records ``--jobs`` point charges (200 users) in a scratch database, then runs each
one's message as a worker thread does once Dramatiq has handed it over: the command's
actor inside the ``CurrentMessage`` middleware, the delivery already counted (as the
broker's fetch counts it), the publisher's thread batching the notices. In the same
process, alternating with it, the plain build's charge (``bench/plain_charge.py``'s actor:
two statements and COMMIT, with psycopg2) runs over the same users. Prints, per job, the
CPU time of the measuring thread and of the whole process (the publisher's thread
too), and what one round trip to Redis and to PostgreSQL costs this process here.

One thread, no GIL contention, no Dramatiq: a figure that moves by a few percent from
run to run where a drain moves by tens, for tuning the job path. (The drain adds
Dramatiq's own machinery to both builds: ``bench.drain_cpu`` measures that.)

Usage: ``python -m bench.job_cpu [--jobs N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg2
import redis
from dramatiq.middleware import CurrentMessage

from bench.common import machine, scratch_env
from bench.shop import insert_users
from db.settings import Settings
from jobs import records
from jobs.clock import utcnow
from workers import bootstrap
from workers.broker import job_message
from workers.consumer import DELIVERIES

CHARGE = "points.charge"
AMOUNT = 10


def cpu_per_item(run: Callable[[list], object], items: list) -> tuple[float, float]:
    """Microseconds of this thread's and of the process's CPU per item of ``run(items)``."""
    thread, process = time.thread_time(), time.process_time()
    run(items)
    return (1e6 * (time.thread_time() - thread) / len(items),
            1e6 * (time.process_time() - process) / len(items))


def round_trip_cpu(call: Callable[[], object], times: int = 2000) -> float:
    """Microseconds of this thread's CPU per ``call()`` (one round trip)."""
    for _ in range(200):
        call()
    return cpu_per_item(lambda calls: [call() for _ in calls], [None] * times)[0]


def main() -> None:
    """Record the charges, run them by slices alternating with the plain build's, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=12_000, help="charges per build")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_env() as env:
        os.environ.setdefault("REDIS_URL", env["REDIS_URL"])  # (for the plain module)
        os.environ.setdefault("PLAIN_NAMESPACE", f"{env['REDIS_PREFIX']}-plain")
        os.environ["DATABASE_URL"] = env["DATABASE_URL"]  # (its actor's connection)
        from bench import plain_charge  # (its broker reads the environment)

        settings = Settings.from_env(env)
        client = redis.Redis.from_url(settings.redis_url)
        rt = bootstrap.start(settings, client)  # (after the plain module: its broker wins)
        rt.publisher.start()
        bootstrap.calm_garbage_collector()  # (as a worker process does)
        users = insert_users(rt.database, "j", 200, 0)
        commands = [(uuid.uuid4(), random.choice(users), CHARGE, {"amount": AMOUNT}, None)
                    for _ in range(args.jobs)]
        with rt.database.connection_context():
            for start in range(0, len(commands), 500):
                records.record_jobs(commands[start:start + 500], utcnow())
        actor, middleware = rt.broker.get_actor(CHARGE), CurrentMessage()
        messages = []
        for job_id, user_id, _, payload, _ in commands:
            message = job_message(job_id, CHARGE, user_id, payload)
            messages.append(message.copy(options={DELIVERIES: 1}))

        def bazaar(part: list) -> None:
            for message in part:
                middleware.before_process_message(rt.broker, message)
                actor.fn(*message.args)
                middleware.after_process_message(rt.broker, message)

        plain = psycopg2.connect(env["DATABASE_URL"])

        def plain_charges(part: list) -> None:
            for _, user_id, *_ in part:
                plain_charge.charge.fn(user_id, AMOUNT)  # (the plain actor's own body)

        warm = min(200, args.jobs // 10)
        bazaar(messages[:warm])
        plain_charges(commands[:warm])
        size = (args.jobs - warm) // args.rounds
        figures: dict[str, list[tuple[float, float]]] = {"Bazaar": [], "plain": []}
        for n in range(args.rounds):
            part = slice(warm + n * size, warm + (n + 1) * size)
            figures["Bazaar"].append(cpu_per_item(bazaar, messages[part]))
            figures["plain"].append(cpu_per_item(plain_charges, commands[part]))
        rt.publisher.flush()
        with plain.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            succeeded = cursor.fetchone()[0]
        plain.rollback()
        redis_trip = round_trip_cpu(client.ping)

        def pg_trip() -> None:
            with plain.cursor() as cursor:
                cursor.execute("SELECT 1")

        plain.autocommit = True
        postgres_trip = round_trip_cpu(pg_trip)
        plain.close()
        rt.database.close_all()
    ran = warm + size * args.rounds
    if succeeded != ran:
        raise SystemExit(f"only {succeeded} of {ran} charges succeeded")
    print(f"{ran:,} charges each, {args.rounds} alternating slices of {size:,}")
    for build, pairs in figures.items():
        line = " / ".join(f"{t:.0f} ({p:.0f})" for t, p in pairs)
        print(f"{build}: CPU per job, this thread (whole process), microseconds: {line}")
    ours = statistics.median(t for t, _ in figures["Bazaar"])
    theirs = statistics.median(t for t, _ in figures["plain"])
    print(f"median, this thread: Bazaar {ours:.0f} us, plain {theirs:.0f} us, "
          f"Bazaar / plain {ours / theirs:.2f}")
    print(f"one round trip costs this thread: Redis (PING) {redis_trip:.0f} us, "
          f"PostgreSQL (SELECT 1) {postgres_trip:.0f} us")


if __name__ == "__main__":
    main()
