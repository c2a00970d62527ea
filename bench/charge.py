"""Load generator for ``POST /points/charge``.

Starts its own web process and Dramatiq workers on a scratch database, then runs:

1. accept: workers stopped, C connections send N charges as fast as they can;
   prints accepted/s and the 202 latency percentiles (the door alone).
2. drain: 2 worker processes start and work off those N jobs; prints completed/s.
3. steady: workers running, an open-loop load at a fixed rate (default: half the
   drain rate) for D seconds; prints submit->terminal latency percentiles
   (``finished_at - created_at`` as recorded by the server).

Usage: ``python -m bench.charge [--requests N] [--connections C] [--users U] [--rate R]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from bench.common import latency_line, machine, scratch_env
from db.connection import connect_database
from tests.support import Stack


async def login_users(base: str, count: int) -> list[str]:
    """Sign up ``count`` users; their access tokens."""
    async with aiohttp.ClientSession(base) as s:

        async def one(n: int) -> str:
            creds = {"username": f"bench_{n}", "password": "password123"}
            async with s.post("/api/v1/users/signup", json=creds):
                pass
            async with s.post("/api/v1/users/login", json=creds) as r:
                return (await r.json())["access_token"]

        return list(await asyncio.gather(*(one(n) for n in range(count))))


async def closed_loop(base: str, tokens: list[str], total: int, connections: int) -> tuple:
    """``connections`` clients send ``total`` charges back to back; (seconds, latencies, codes)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base, connector=connector) as s:

        async def client() -> None:
            for n in counter:
                headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
                started = time.perf_counter()
                async with s.post("/api/v1/points/charge", json={"amount": 1},
                                  headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                statuses[r.status] = statuses.get(r.status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        return time.perf_counter() - began, latencies, statuses


async def open_loop(base: str, tokens: list[str], rate: float, seconds: float) -> dict[int, int]:
    """Send charges at ``rate`` per second for ``seconds``, whatever the answers' pace."""
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base, connector=connector) as s:

        async def one(n: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            async with s.post("/api/v1/points/charge", json={"amount": 1}, headers=headers) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

        tasks, began, n = [], time.perf_counter(), 0
        while (elapsed := time.perf_counter() - began) < seconds:
            due = int(elapsed * rate)
            while n < due:
                tasks.append(asyncio.create_task(one(n)))
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return statuses


def wait_drained(database, expected: int, timeout: float = 300) -> float:
    """Seconds until ``expected`` jobs are terminal."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        with database.connection_context():
            done = database.execute_sql(
                "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')"
            ).fetchone()[0]
        if done >= expected:
            return time.perf_counter() - began
        time.sleep(0.05)
    raise SystemExit(f"only {done}/{expected} jobs terminal after {timeout}s")


def server_latencies(database, since_total: int) -> list[float]:
    """submit->terminal seconds of the jobs after the first ``since_total`` (oldest first)."""
    with database.connection_context():
        rows = database.execute_sql(
            "SELECT EXTRACT(EPOCH FROM finished_at - created_at) FROM jobs "
            "ORDER BY created_at OFFSET %s", (since_total,)
        ).fetchall()
    return [float(r[0]) for r in rows]


def main() -> None:
    """Run the three phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None, help="steady phase rate (/s)")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with scratch_env(DB_POOL_SIZE="16") as env:
        stack = Stack(env)
        database = connect_database(env["DATABASE_URL"], 4)
        try:
            stack.start_web()
            base = stack.api.base
            tokens = asyncio.run(login_users(base, args.users))
            print(f"processes: 1 web; {args.worker_processes} worker processes x "
                  f"{args.worker_threads} threads; load generator: 1 process, "
                  f"{args.connections} connections, {args.users} users")

            seconds, latencies, statuses = asyncio.run(
                closed_loop(base, tokens, args.requests, args.connections))
            accepted = statuses.get(202, 0)
            print(f"accept: {accepted} accepted in {seconds:.2f}s = {accepted / seconds:,.0f}/s "
                  f"(statuses {statuses})")
            print("  " + latency_line("202 latency", latencies))

            stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
            drained = wait_drained(database, accepted)
            print(f"drain: {accepted} jobs completed in {drained:.2f}s = "
                  f"{accepted / drained:,.0f}/s (includes worker start-up)")

            rate = args.rate or max(50.0, accepted / drained / 2)
            before = accepted
            statuses = asyncio.run(open_loop(base, tokens, rate, args.seconds))
            sent = sum(statuses.values())
            wait_drained(database, before + statuses.get(202, 0))
            print(f"steady: {sent} charges at {rate:,.0f}/s for {args.seconds:.0f}s "
                  f"(statuses {statuses})")
            print("  " + latency_line("submit->terminal", server_latencies(database, before)))
        finally:
            stack.stop()
            database.close_all()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
