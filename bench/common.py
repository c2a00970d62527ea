"""Shared pieces of the load generators: a throwaway database and key space, percentiles,
wrk, and the machine's speed against DESIGN.md's reference machine."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import psycopg2
import redis

from db.connection import connect_database
from db.migrate import migrate
from tests.support import Stack

PG = {"host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"), "user": "postgres"}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def scratch_env(**overrides: str) -> Iterator[dict[str, str]]:
    """A migrated database and a Redis prefix of their own; dropped afterwards."""
    name = f"bazaar_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bzb-{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{PG['user']}@{PG['host']}:5432/{name}"
    db = connect_database(url, 4)
    migrate(db)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "JWT_SECRET": "bench-secret-0123456789-0123456789",
        "SCRYPT_N": "1024",
        "LOG_LEVEL": "WARNING",
        "SECURE_COOKIES": "false",
        **overrides,
    }
    try:
        yield env
    finally:
        db.close_all()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        client = redis.Redis.from_url(REDIS_URL)
        delete_prefixed(client, prefix)


def delete_prefixed(client: redis.Redis, prefix: str) -> None:
    """Delete every Redis key that starts with ``prefix``."""
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def latency_line(label: str, seconds: list[float]) -> str:
    """``label: p50 .. p95 .. p99 .. max`` in milliseconds."""
    s = sorted(seconds)
    parts = [f"p{p}={percentile(s, p) * 1000:.1f}ms" for p in (50, 95, 99)]
    return f"{label}: " + " ".join(parts) + f" max={s[-1] * 1000:.1f}ms (n={len(s)})"


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or "cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    cores = os.cpu_count()
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cores} cores, {cpu}; Python {platform.python_version()}; {pg}"


async def open_loop(total: int, rate: float, one: Callable[[int], Awaitable[None]]) -> None:
    """Start ``one(n)`` for n = 0..total-1 at ``rate`` per second, whatever the answers'
    pace (an open loop), and wait for all of them."""
    began = time.perf_counter()
    tasks = []
    for n in range(total):
        await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)


@dataclass
class Pgbench:
    """What one pgbench run reported."""

    tps: float
    latency_ms: float  # the average
    transactions: int
    error: str  # the first error pgbench printed (an aborted client), or ""


def pgbench(dbname: str, script: str, seconds: float, clients: int, threads: int = 2,
            **variables: int) -> Pgbench:
    """Run ``script`` (pgbench's own language) on database ``dbname``: ``-n -c clients
    -j threads -T seconds`` and ``-D name=value`` for each variable."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    argv = ["pgbench", "-h", PG["host"], "-U", PG["user"], "-n", f"-c{clients}", f"-j{threads}",
            f"-T{max(1, round(seconds))}", "-f", f.name,
            *(f"-D{name}={value}" for name, value in variables.items()), dbname]
    try:
        run = subprocess.run(argv, capture_output=True, text=True)
    finally:
        os.unlink(f.name)

    def number(pattern: str) -> float:
        found = re.search(pattern, run.stdout, re.M)
        return float(found.group(1)) if found else float("nan")

    done = re.search(r"actually processed: (\d+)", run.stdout)
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    return Pgbench(number(r"^tps = ([\d.]+)"), number(r"latency average = ([\d.]+)"),
                   int(done.group(1)) if done else 0, errors[0] if errors else "")


@dataclass
class PlainStack(Stack):
    """A plain reference build's processes (``python -m <module> web|worker``), each in a
    session of its own like Bazaar's."""

    module: str = "bench.plain_charge"

    def start_web(self) -> None:
        """Start the plain web process and wait until it answers."""
        self._spawn("web", [sys.executable, "-m", self.module, "web"], PORT=str(self.port))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("the plain web process did not start; see its log")

    def start_worker(self, name: str = "worker", processes: int = 2, threads: int = 8) -> None:
        """Start the plain actor's Dramatiq workers."""
        self._spawn(name, [sys.executable, "-m", self.module, "worker"],
                    WORKER_PROCESSES=str(processes), WORKER_THREADS=str(threads))


def listeners(port: int) -> int:
    """How many sockets listen on ``port``: with ``SO_REUSEPORT`` each process has its own
    (a ``bazaar web`` process listens only once it serves)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def more_webs(stack: Stack, argv: list[str], count: int) -> None:
    """Start ``count`` more web processes (``argv``) on ``stack``'s port, beside the one it
    runs, and wait until each listens."""
    for n in range(count):
        stack._spawn(f"web{n + 2}", argv, PORT=str(stack.port))
    deadline = time.monotonic() + 20
    while listeners(stack.port) < count + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("a web process did not start; see its log")
        time.sleep(0.05)


# -- wrk, and the machine's speed -----------------------------------------------------------

REFERENCE_BARE = 21_800  # DESIGN.md: bare aiohttp on its reference machine, answers a second


def run_wrk(base: str, lua: str, seconds: int, connections: int) -> str:
    """Run wrk (one thread, ``--latency``) with ``lua`` as its script; its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        return subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             base], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(script.name)


def wrk_rate(out: str) -> float:
    """wrk's requests per second."""
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


WRK_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk_ms(text: str | None) -> float:
    """A wrk duration (``850.00us``, ``12.34ms``, ``1.02s``) in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text or "")
    return float(found.group(1)) * WRK_MS[found.group(2)] if found else math.nan


def wrk_percentiles(out: str) -> dict[str, str]:
    """wrk's ``--latency`` percentiles: ``{"50": "1.2ms", "90": ..., "99": ...}``."""
    return dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))


def wrk_p99_ms(out: str) -> float:
    """wrk's p99 latency in milliseconds."""
    return wrk_ms(wrk_percentiles(out)["99"])


@dataclass(frozen=True)
class Speed:
    """How fast the machine is at one moment: bare aiohttp's answers a second (a constant,
    64 connections, wrk), against DESIGN.md's reference machine's 21,800.

    DESIGN.md reads every target as a ratio to a reference measured in the same run,
    because machines of this kind differ several-fold; its times (the door's p99, the
    steady submit->terminal latency, the coupon burst, the waiting room's p99) were set on
    its reference machine. ``line`` scales such a time to this machine by bare aiohttp,
    measured just before the phase it judges: a machine half as fast is given twice the
    time, a faster one less.
    """

    bare: float  # answers a second
    bare_p99_ms: float

    @property
    def slower(self) -> float:
        """How many times slower than the reference machine (under 1: faster)."""
        return REFERENCE_BARE / self.bare

    def line(self, target: float) -> float:
        """``target`` (a time set on the reference machine) on this machine."""
        return target * self.slower

    def verdict(self, value: float, target: float, unit: str) -> str:
        """``value`` against ``target`` scaled to this machine, and against it unscaled."""
        line = self.line(target)
        return (f"<= {target:g} {unit} x {self.slower:.2f} = {line:.1f} {unit}: "
                f"{'met' if value <= line else 'MISSED'} (unscaled: "
                f"{'met' if value <= target else 'missed'})")

    def __str__(self) -> str:
        return (f"bare aiohttp {self.bare:,.0f}/s (p99 {self.bare_p99_ms:.2f} ms) = "
                f"{1 / self.slower:.2f} x the reference machine's {REFERENCE_BARE:,}/s")


class BareAiohttp:
    """``bench.bare`` in a process of its own, idle except while it is measured."""

    def __init__(self, env: dict[str, str]) -> None:
        self.stack = PlainStack(env, module="bench.bare")
        self.stack.start_web()

    def measure(self, seconds: int = 5, connections: int = 64) -> Speed:
        """The machine's speed now."""
        out = run_wrk(self.stack.api.base, 'wrk.path = "/bare"', seconds, connections)
        return Speed(wrk_rate(out), wrk_p99_ms(out))

    def stop(self) -> None:
        """Stop the process."""
        self.stack.stop()
