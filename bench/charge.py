"""Load generator for ``POST /points/charge``.

Starts its own web process and Dramatiq workers on a scratch database, then runs:

1. accept: workers stopped, C connections send charges as fast as they can for D
   seconds (with wrk if installed, else N requests from a Python client); prints
   accepted/s and the 202 latency percentiles (the door alone).
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
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

import aiohttp

from bench.common import latency_line, machine, scratch_env
from db.connection import connect_database
from jobs.clock import utcnow
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


async def closed_loop(base: str, tokens: list[str], total: int, connections: int,
                      path: str | Callable[[int], str] = "/api/v1/points/charge",
                      body: Callable[[int], dict] = lambda n: {"amount": 1}) -> tuple:
    """``connections`` clients send ``total`` commands back to back (the n-th to ``path``,
    or ``path(n)`` if it is a function, with ``body(n)``, a charge of 1 by default);
    (seconds, latencies, codes)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base, connector=connector) as s:

        async def client() -> None:
            for n in counter:
                headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
                started = time.perf_counter()
                url = path(n) if callable(path) else path
                async with s.post(url, json=body(n), headers=headers) as r:
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


WRK_SCRIPT = """
tokens = {%s}
n = 0
request = function()
  n = n + 1
  local headers = {["Authorization"] = "Bearer " .. tokens[(n %% #tokens) + 1],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/api/v1/points/charge", headers, '{"amount":1}')
end
"""


def wrk_loop(base: str, tokens: list[str], seconds: float, connections: int) -> tuple:
    """The accept phase with wrk (C, one thread), which costs the server's CPU far less."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ", ".join(f'"{t}"' for t in tokens))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", script.name,
         base], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    return total - int(errors.group(1) if errors else 0), rate, pct


def session_cpu(session_id: int) -> float:
    """CPU seconds used so far by the live processes of one session (a Stack process and
    its children: the web process, or the worker's main process and its forks)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # field 6 of stat: the session id
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


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


def job_count(database) -> int:
    """Jobs recorded so far."""
    with database.connection_context():
        return database.execute_sql("SELECT count(*) FROM jobs").fetchone()[0]


def server_latencies(database, since) -> list[float]:
    """submit->terminal seconds of the jobs recorded at or after ``since``."""
    with database.connection_context():
        rows = database.execute_sql(
            "SELECT EXTRACT(EPOCH FROM finished_at - created_at) FROM jobs "
            "WHERE created_at >= %s", (since,)
        ).fetchall()
    return [float(r[0]) for r in rows]


def work_rate(database) -> tuple[int, float]:
    """Jobs finished and the span from the first start to the last finish (server clocks)."""
    with database.connection_context():
        count, span = database.execute_sql(
            "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) FROM jobs"
        ).fetchone()
    return count, float(span)


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
    parser.add_argument("--python-client", action="store_true", help="don't use wrk")
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

            web_cpu = session_cpu(stack.procs["web"].pid)
            if shutil.which("wrk") and not args.python_client:
                accepted, rate, pct = wrk_loop(base, tokens, args.seconds, args.connections)
                print(f"accept (wrk, {args.connections} connections, {args.seconds:.0f}s): "
                      f"{accepted} accepted = {rate:,.0f}/s; 202 latency p50={pct.get('50')} "
                      f"p90={pct.get('90')} p99={pct.get('99')}")
            else:
                seconds, latencies, statuses = asyncio.run(
                    closed_loop(base, tokens, args.requests, args.connections))
                accepted = statuses.get(202, 0)
                print(f"accept (python client): {accepted} accepted in {seconds:.2f}s = "
                      f"{accepted / seconds:,.0f}/s (statuses {statuses})")
                print("  " + latency_line("202 latency", latencies))

            accepted = job_count(database)  # includes answers the client gave up waiting for
            web_cpu = session_cpu(stack.procs["web"].pid) - web_cpu
            print(f"  door CPU: {web_cpu:.2f} s for {accepted} commands = "
                  f"{1000 * web_cpu / accepted:.3f} ms per command")
            stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
            wait_drained(database, accepted)
            worker_cpu = session_cpu(stack.procs["worker"].pid)
            done, span = work_rate(database)
            print(f"drain: {done} jobs completed in {span:.2f}s = {done / span:,.0f}/s "
                  "(first start to last finish, server clocks)")
            print(f"  worker CPU (start-up included): {worker_cpu:.2f} s = "
                  f"{1000 * worker_cpu / done:.3f} ms per job")

            rate = args.rate or max(50.0, done / span / 2)
            since = utcnow()
            statuses = asyncio.run(open_loop(base, tokens, rate, args.seconds))
            sent = sum(statuses.values())
            wait_drained(database, job_count(database))
            print(f"steady: {sent} charges at {rate:,.0f}/s for {args.seconds:.0f}s "
                  f"(statuses {statuses})")
            print("  " + latency_line("submit->terminal", server_latencies(database, since)))
        finally:
            stack.stop()
            database.close_all()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
