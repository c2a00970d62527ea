"""The door alone, again and again: ``POST /points/charge`` at 64 connections (wrk).

``bench.charge`` measures the door once per run, on an empty ``jobs`` table, between a
drain and a steady phase. Its p99 moves by several milliseconds from one run to the
next, so this repeats only the accept phase: a fresh web process per run, the jobs it
recorded deleted after each (and the table vacuumed). ``--prefill N`` first puts N
finished jobs in the table, as a system that has run for a while has, for the door's
cost on a large table. Each run prints its rate and percentiles, the number of group
commits and the longest pauses between two of them; then the plain door
(``bench/plain_charge.py``) runs the same load in the same round, for its figures.
Each of Bazaar's runs also prints what it wrote to the WAL; ``--checkpoint`` makes a
checkpoint before each, so that every page a run touches is written whole the first
time (the worst minute after each of the server's checkpoints).

    python -m bench.door [--rounds 5] [--seconds 8] [--prefill 2000000] [--checkpoint]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import redis

from bench.charge import DOOR_P99_MS, wrk_loop
from bench.common import (
    BareAiohttp,
    PlainStack,
    Speed,
    delete_prefixed,
    machine,
    scratch_env,
    wrk_ms,
)
from bench.shop import insert_users, mint_tokens
from db.connection import connect_database
from jobs import records
from tests.support import Stack

PREFILL = (
    "INSERT INTO jobs (id, user_id, type, status, payload, request_hash, attempts, sent,"
    " created_at, started_at, finished_at, result)"
    " SELECT {id}, %s + g %% %s, 'points.charge', 'succeeded', '{{\"amount\": 1}}',"
    " '', 1, true, t, t, t, '{{}}'"
    " FROM generate_series(1, %s) g, LATERAL (SELECT now() - interval '1 day'"
    " + g * interval '1 ms' AS t) AS at"
)
IDS = {  # the prefilled jobs' ids, made as this build makes them (``new_job_id``)
    4: "gen_random_uuid()",
    7: "(lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'"
       " || substr(md5(random()::text), 1, 3) || substr('89ab', 1 + floor(random() * 4)::int, 1)"
       " || substr(md5(random()::text), 1, 15))::uuid",  # (version 7, of time t)
}
RECENT = "created_at > now() - interval '1 hour'"  # (the prefilled jobs are a day old)


def prefill(database, first_user: int, users: int, count: int) -> None:
    """Put ``count`` finished jobs of the bench users in ``jobs``; vacuum and checkpoint."""
    started = time.monotonic()
    with database.connection_context():
        sql = PREFILL.format(id=IDS[records.new_job_id().version])
        database.execute_sql(sql, (first_user, users, count))
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
    long = [g for g in gaps if g > 10]
    return (f"{len(times):,} group commits of {jobs / max(1, len(times)):.1f} commands; "
            f"longest pauses between two: {', '.join(f'{g:.0f}' for g in gaps[:3])} ms; "
            f"{len(long)} over 10 ms, {sum(long):,.0f} ms in all")


COUNTERS = ("SELECT wal_records, wal_fpi, wal_bytes, wal_sync, wal_sync_time,"
       " (SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables"
       "  WHERE relname = 'jobs'),"
       " (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) FROM pg_stat_wal")


def server_counters(database) -> tuple[float, ...]:
    """The server's WAL counters (records, full-page images, bytes, syncs, sync ms), the
    autovacuums and autoanalyzes of ``jobs``, and the checkpoints."""
    with database.connection_context():
        return tuple(float(v) for v in database.execute_sql(COUNTERS).fetchone())


def counters_line(before: tuple[float, ...], after: tuple[float, ...], accepted: int) -> str:
    """What one accept phase wrote to the WAL, per accepted command, and its syncs; and
    what else the server did meanwhile."""
    wal_records, fpi, size, syncs, sync_ms, vacuums, checkpoints = (
        b - a for a, b in zip(before, after, strict=True))
    per = max(1, accepted)
    return (f"WAL: {size / per:,.0f} bytes, {wal_records / per:.1f} records, {fpi / per:.2f} "
            f"full-page images a command; {syncs:,.0f} syncs"
            + (f", {sync_ms / syncs:.2f} ms each" if syncs and sync_ms else "")
            + f"; {vacuums:.0f} autovacuums or analyzes of jobs, {checkpoints:.0f} checkpoints")


def door(stack: Stack, tokens: list[str], args: argparse.Namespace
         ) -> tuple[float, int, dict, str]:
    """One accept phase on a fresh web process of ``stack``: accepted/s, accepted, wrk's
    percentiles, what went wrong."""
    try:
        stack.start_web()
        accepted, seconds, pct, wrong = wrk_loop(stack.api.base, tokens, args.seconds,
                                                 args.connections)
    finally:
        stack.stop()
    return accepted / seconds, accepted, pct, wrong


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
    parser.add_argument("--checkpoint", action="store_true",
                        help="a checkpoint before each of Bazaar's runs (its worst case)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    p99s: dict[str, list[float]] = {"Bazaar": [], "plain": []}
    speeds: list[Speed] = []
    with scratch_env(DB_POOL_SIZE="16") as env:
        database = connect_database(env["DATABASE_URL"], 2)
        namespace = f"{env['REDIS_PREFIX']}-plain:dramatiq"  # under the scratch prefix
        client = redis.Redis.from_url(env["REDIS_URL"])
        bare = BareAiohttp(env)
        try:
            with database.connection_context():  # (for the syncs' times in pg_stat_wal)
                name = database.execute_sql("SELECT current_database()").fetchone()[0]
                database.execute_sql(f'ALTER DATABASE "{name}" SET track_wal_io_timing = on')
            users = insert_users(database, "bench_", args.users, 0)
            tokens = mint_tokens(env, users)
            if args.prefill:
                prefill(database, min(users), args.users, args.prefill)
            for n in range(args.rounds):
                if args.checkpoint:
                    with database.connection_context():
                        database.execute_sql("CHECKPOINT")
                speeds.append(bare.measure())
                print(f"run {n + 1}, the machine now: {speeds[-1]}")
                before = server_counters(database)
                rate, accepted, pct, wrong = door(Stack(env), tokens, args)
                after = server_counters(database)
                p99s["Bazaar"].append(wrk_ms(pct.get("99")))
                print(line(f"run {n + 1}, Bazaar", rate, pct, wrong))
                print("  " + counters_line(before, after, accepted))
                print("  " + batches(database))
                rate, _, pct, wrong = door(PlainStack({**env, "PLAIN_NAMESPACE": namespace}),
                                           tokens, args)
                p99s["plain"].append(wrk_ms(pct.get("99")))
                print(line(f"run {n + 1}, plain ", rate, pct, wrong))
                delete_prefixed(client, namespace)  # (its queued messages)
        finally:
            bare.stop()
            database.close_all()
            client.close()
    for build, values in p99s.items():
        print(f"{build} p99s: {' / '.join(f'{p:.1f}' for p in values)} ms; median "
              f"{statistics.median(values):.1f} ms; {sum(p <= DOOR_P99_MS for p in values)} "
              f"of {len(values)} within {DOOR_P99_MS:g} ms")
    scaled = [(p, speed.line(DOOR_P99_MS)) for p, speed in zip(p99s["Bazaar"], speeds, strict=True)]
    print(f"Bazaar, against {DOOR_P99_MS:g} ms scaled by the machine's speed before each run: "
          + " / ".join(f"{p:.1f} of {line:.1f}" for p, line in scaled)
          + f" ms; {sum(p <= line for p, line in scaled)} of {len(scaled)} within")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
