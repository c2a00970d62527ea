"""The door alone, again and again: ``POST /points/charge`` at 64 connections (wrk).

``bench.charge`` measures the door once per run, on an empty ``jobs`` table, between a
drain and a steady phase. Its p99 moves by several milliseconds from one run to the
next, so this repeats only the accept phase: a fresh web process per run, the jobs it
recorded deleted after each (and the table vacuumed). ``--prefill N`` first puts N
finished jobs in the table, as a system that has run for a while has, for the door's
cost on a large table. Each run prints its rate and percentiles, the number of group
commits and the longest pauses between two of them; then the plain door
(``bench/plain_charge.py``) runs the same load in the same round, for its figures.

    python -m bench.door [--rounds 5] [--seconds 8] [--prefill 2000000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import redis

from bench.charge import wrk_loop, wrk_ms
from bench.common import PlainStack, delete_prefixed, machine, scratch_env
from bench.shop import insert_users, mint_tokens
from db.connection import connect_database
from tests.support import Stack

PREFILL = (
    "INSERT INTO jobs (id, user_id, type, status, payload, request_hash, attempts, sent,"
    " created_at, started_at, finished_at, result)"
    " SELECT gen_random_uuid(), %s + g %% %s, 'points.charge', 'succeeded', '{\"amount\": 1}',"
    " '', 1, true, t, t, t, '{}'"
    " FROM generate_series(1, %s) g, LATERAL (SELECT now() - interval '1 day'"
    " + g * interval '1 ms' AS t) AS at"
)
RECENT = "created_at > now() - interval '1 hour'"  # (the prefilled jobs are a day old)


def prefill(database, first_user: int, users: int, count: int) -> None:
    """Put ``count`` finished jobs of the bench users in ``jobs``; vacuum and checkpoint."""
    started = time.monotonic()
    with database.connection_context():
        database.execute_sql(PREFILL, (first_user, users, count))
        database.execute_sql("VACUUM ANALYZE jobs")
        database.execute_sql("CHECKPOINT")
        size = database.execute_sql(
            "SELECT pg_size_pretty(pg_total_relation_size('jobs'))").fetchone()[0]
    print(f"prefilled {count:,} finished jobs in {time.monotonic() - started:.0f}s; "
          f"jobs is {size} with its indexes")


def batches(database) -> str:
    """The group commits of the run just made (the jobs of one share ``created_at``) and
    the longest pauses between two of them; then those jobs are deleted."""
    with database.connection_context():
        times = [t for (t,) in database.execute_sql(
            f"SELECT DISTINCT created_at FROM jobs WHERE {RECENT} ORDER BY 1").fetchall()]
        jobs = database.execute_sql(f"SELECT count(*) FROM jobs WHERE {RECENT}").fetchone()[0]
        database.execute_sql(f"DELETE FROM jobs WHERE {RECENT}")
        database.execute_sql("VACUUM jobs")
    gaps = sorted(((b - a).total_seconds() * 1000 for a, b in itertools.pairwise(times)),
                  reverse=True)
    return (f"{len(times):,} group commits of {jobs / max(1, len(times)):.1f} commands; "
            f"longest pauses between two: {', '.join(f'{g:.0f}' for g in gaps[:3])} ms")


def door(stack: Stack, tokens: list[str], args: argparse.Namespace) -> tuple[float, dict, str]:
    """One accept phase on a fresh web process of ``stack``: accepted/s, wrk's
    percentiles, what went wrong."""
    try:
        stack.start_web()
        accepted, seconds, pct, wrong = wrk_loop(stack.api.base, tokens, args.seconds,
                                                 args.connections)
    finally:
        stack.stop()
    return accepted / seconds, pct, wrong


def line(label: str, rate: float, pct: dict, wrong: str) -> str:
    """A run's figures, as printed."""
    return (f"{label}: {rate:,.0f} accepted/s; 202 latency p50={pct.get('50')} "
            f"p90={pct.get('90')} p99={pct.get('99')}" + (f"; {wrong}" if wrong else ""))


def main() -> None:
    """Run the rounds and print each, then the p99s together."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--prefill", type=int, default=0, help="finished jobs put in first")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    p99s: dict[str, list[float]] = {"Bazaar": [], "plain": []}
    with scratch_env(DB_POOL_SIZE="16") as env:
        database = connect_database(env["DATABASE_URL"], 2)
        namespace = f"{env['REDIS_PREFIX']}-plain:dramatiq"  # under the scratch prefix
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            users = insert_users(database, "bench_", args.users, 0)
            tokens = mint_tokens(env, users)
            if args.prefill:
                prefill(database, min(users), args.users, args.prefill)
            for n in range(args.rounds):
                rate, pct, wrong = door(Stack(env), tokens, args)
                p99s["Bazaar"].append(wrk_ms(pct.get("99")))
                print(line(f"run {n + 1}, Bazaar", rate, pct, wrong))
                print("  " + batches(database))
                rate, pct, wrong = door(PlainStack({**env, "PLAIN_NAMESPACE": namespace}),
                                        tokens, args)
                p99s["plain"].append(wrk_ms(pct.get("99")))
                print(line(f"run {n + 1}, plain ", rate, pct, wrong))
                delete_prefixed(client, namespace)  # (its queued messages)
        finally:
            database.close_all()
            client.close()
    for build, values in p99s.items():
        print(f"{build} p99s: {' / '.join(f'{p:.1f}' for p in values)} ms; median "
              f"{statistics.median(values):.1f} ms; {sum(p <= 25 for p in values)} of "
              f"{len(values)} within 25 ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
