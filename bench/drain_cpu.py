"""Where a drained job's CPU goes: per process group, over a window in the middle of a drain.

Fills the queue through the door (wrk, 64 connections, ``--fill`` seconds), stops the web
process, starts 2 worker processes x 8 threads, waits ``--settle`` seconds, then reads the
CPU time of the worker processes, of every ``postgres`` process and of ``redis-server``
from ``/proc`` before and after a ``--window`` of seconds, and the jobs finished in it.
Prints jobs/s, milliseconds of CPU per job for each, and bytes of WAL per job.
``--plain`` measures the plain reference build (``bench/plain_charge.py``) the same way
(``--plain-consumer bazaar``: with Bazaar's Redis consumer instead of Dramatiq's);
``--no-prepare`` runs Bazaar with ``DATABASE_URL ...?prepared_statements=false``.
(PostgreSQL and Redis are shared with whatever else runs on the machine: run it alone.)

``--pairs N`` alternates Bazaar and plain N times, each in a scratch database of its
own, and prints each pair's ratio and their median: on a machine whose speed drifts
from one minute to the next, the steadiest ratio this repository has.

Usage: ``python -m bench.drain_cpu [--plain | --pairs N] [--plain-consumer bazaar]
[--no-prepare] [--fill S] [--window S]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.charge import wrk_loop
from bench.common import PlainStack, machine, scratch_env
from bench.shop import cpu_snapshot, insert_users, mint_tokens
from db.connection import connect_database
from tests.support import Stack


def cpu_by_group(session: int) -> dict[str, float]:
    """CPU seconds so far: the worker session's processes, every PostgreSQL process,
    Redis."""
    totals = dict.fromkeys(("workers", "postgres", "redis"), 0.0)
    for group, seconds in cpu_snapshot({"workers": session}, None).values():
        totals[group] += seconds
    return totals


def finished(database, plain: bool) -> int:
    """Jobs finished so far (the plain build has no job rows: its history rows)."""
    sql = ("SELECT count(*) FROM point_history" if plain else
           "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
    with database.connection_context():
        return database.execute_sql(sql).fetchone()[0]


def wal_position(database) -> int:
    """Bytes of WAL the server has written so far (every database's: run it alone)."""
    with database.connection_context():
        return database.execute_sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0]


def measure(args: argparse.Namespace, plain: bool) -> float | None:
    """Fill one build's queue, drain it, print one window's figures; its jobs/s (None if
    the queue ran dry inside the window)."""
    with scratch_env() as env:
        database = connect_database(env["DATABASE_URL"], 4)
        if args.no_prepare:
            env["DATABASE_URL"] += "?prepared_statements=false"
        env["PLAIN_NAMESPACE"] = f"{env['REDIS_PREFIX']}-plain"
        env["PLAIN_CONSUMER"] = args.plain_consumer
        tokens = mint_tokens(env, insert_users(database, "d", 200, 0))
        stack = PlainStack(env) if plain else Stack(env)
        try:
            stack.start_web()
            accepted, took, _, _ = wrk_loop(stack.api.base, tokens, args.fill, 64)
            stack.terminate("web")
            stack.start_worker(processes=2, threads=8)
            time.sleep(args.settle)
            session = stack.procs["worker"].pid
            before = (*cpu_by_group(session).values(), finished(database, plain),
                      time.perf_counter(), wal_position(database))
            time.sleep(args.window)
            after = (*cpu_by_group(session).values(), finished(database, plain),
                     time.perf_counter(), wal_position(database))
        finally:
            stack.stop()
            database.close_all()
    jobs, seconds = after[3] - before[3], after[4] - before[4]
    per_job = [1000 * (b - a) / max(jobs, 1) for a, b in zip(before[:3], after[:3], strict=True)]
    build = f"plain ({args.plain_consumer}'s consumer)" if plain else "Bazaar"
    if args.no_prepare:
        build += " (no prepared statements)"
    print(f"{build}: {accepted:,} queued at {accepted / took:,.0f}/s; mid-drain {jobs:,} jobs "
          f"in {seconds:.1f}s = {jobs / seconds:,.0f}/s")
    print(f"CPU per job: workers {per_job[0]:.3f} ms, PostgreSQL {per_job[1]:.3f} ms, "
          f"Redis {per_job[2]:.3f} ms, total {sum(per_job):.3f} ms; "
          f"WAL {(after[5] - before[5]) / max(jobs, 1):,.0f} bytes per job", flush=True)
    if after[3] >= accepted:
        print("NOT VALID: the queue ran dry inside the window (give --fill more seconds)")
        return None
    return jobs / seconds


def main() -> None:
    """Fill, drain, measure one window (or ``--pairs`` alternating Bazaar/plain ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plain", action="store_true", help="the plain reference build")
    parser.add_argument("--pairs", type=int, default=0,
                        help="alternate Bazaar and plain this many times; print the ratios")
    parser.add_argument("--no-prepare", action="store_true", help="no prepared statements")
    parser.add_argument("--plain-consumer", choices=("dramatiq", "bazaar"), default="dramatiq",
                        help="the plain build's Redis consumer")
    parser.add_argument("--fill", type=float, default=10, help="seconds of door load")
    parser.add_argument("--settle", type=float, default=4, help="seconds before the window")
    parser.add_argument("--window", type=float, default=10, help="seconds measured")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.pairs:
        measure(args, args.plain)
        return
    ratios = []
    for _ in range(args.pairs):
        ours, theirs = measure(args, False), measure(args, True)
        if ours and theirs:
            ratios.append(ours / theirs)
    print("Bazaar / plain, pair by pair: " + " / ".join(f"{r:.2f}" for r in ratios)
          + (f"; median {statistics.median(ratios):.2f}" if ratios else ""))


if __name__ == "__main__":
    main()
