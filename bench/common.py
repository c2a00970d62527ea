"""Shared pieces of the load generators: a throwaway database and key space, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import psycopg2
import redis

from db.connection import connect_database
from db.migrate import migrate

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
