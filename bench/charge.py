"""Load generator for ``POST /points/charge``, next to plain reference builds and pgbench.

On one scratch database and Redis prefix, in one run (DESIGN "Performance targets"):

1. Bazaar accept: 1 web process, workers stopped; C connections send charges as fast as
   they can for D seconds (with wrk if installed, else N requests from a Python client),
   as U users (inserted with their wallets, tokens minted, no HTTP);
   prints accepted/s, the 202 latency percentiles and the web process's CPU per command
   (the door alone).
2. Bazaar drain: 2 worker processes x 8 threads start and work off those jobs; prints
   completed/s (first ``started_at`` to last ``finished_at``, server clocks).
3. Bazaar steady: workers running, an open-loop load at a fixed rate (default: half the
   drain rate) for D seconds; prints submit->terminal latency percentiles
   (``finished_at - created_at`` as recorded by the server).
4. plain door and plain drain (``bench/plain_charge.py``; Bazaar's processes stopped
   first): phases 1 and 2 again, same users and tokens, same wrk settings and worker
   shape, on a handler that checks the JWT, validates the body and calls Dramatiq's
   ``send``, and an actor doing ``points.charge``'s two statements in one transaction.
   Its drain is first to last commit of its history rows (``clock_timestamp()``).
5. pgbench, the database's own ceiling, as many clients as worker threads, D seconds:
   the charge SQL on random users of the seeded wallets, and the one-hot-row coupon SQL
   (``jobs.coupons.issue_coupon``'s SELECT, INSERT and guarded UPDATE of one coupon,
   each transaction a fresh user).

Then a summary: each figure for Bazaar and plain, their ratio and DESIGN's target. With
wrk, ``bench.bare`` is measured for 5 s before each accept phase and before the steady
phase: the door's p99 and the steady latency are judged by DESIGN's times (25 ms; 15 and
100 ms) scaled by the machine's speed then (``bench.common.Speed``), with the unscaled
verdicts beside them.

Usage: ``python -m bench.charge [--seconds D] [--connections C] [--users U] [--rate R]
[--skip-plain] [--skip-pgbench] [--python-client --requests N]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import peewee
import redis

from bench.common import (
    BareAiohttp,
    PlainStack,
    Speed,
    latency_line,
    machine,
    percentile,
    pgbench,
    run_wrk,
    scratch_env,
    wrk_ms,
    wrk_percentiles,
)
from bench.pacer import Pacer, post_request
from bench.shop import code_version, insert_users, load, mint_tokens, scalar
from db.connection import connect_database
from jobs.clock import utcnow
from tests.support import Stack


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


def open_loop(base: str, tokens: list[str], rate: float, seconds: float) -> Pacer:
    """Send charges at ``rate`` per second for ``seconds``, whatever the answers' pace
    (``bench.pacer``: 64 keep-alive connections, little CPU)."""
    url = urlsplit(base)
    requests = [post_request(url.netloc, "/api/v1/points/charge",
                             {"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"}, b'{"amount":1}')
                for token in tokens]
    pacer = Pacer(requests, rate)
    asyncio.run(pacer.run(url.hostname, url.port, seconds))
    return pacer


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
    """The accept phase with wrk (C, one thread), which costs the server's CPU far less:
    (2xx answers, seconds, percentiles ``{"50": "1.2ms", ...}``, what went wrong or "")."""
    out = run_wrk(base, WRK_SCRIPT % ", ".join(f'"{t}"' for t in tokens), int(seconds),
                  connections)
    total, took = re.search(r"(\d+) requests in (\S+?),", out).groups()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    wrong = "; ".join(([f"{errors.group(1)} non-2xx answers"] if errors else [])
                      + ([f"socket errors: {sockets.group(1)}"] if sockets else []))
    pct = wrk_percentiles(out)
    return int(total) - int(errors.group(1) if errors else 0), wrk_ms(took) / 1000, pct, wrong


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


def server_latencies(database, since) -> tuple[list[float], list[float]]:
    """submit->terminal seconds of the jobs recorded at or after ``since``, and the part
    of each spent before a worker started it (sent, queued, fetched, handed to a
    thread)."""
    with database.connection_context():
        rows = database.execute_sql(
            "SELECT EXTRACT(EPOCH FROM finished_at - created_at),"
            " EXTRACT(EPOCH FROM started_at - created_at) FROM jobs "
            "WHERE created_at >= %s", (since,)
        ).fetchall()
    return [float(r[0]) for r in rows], [float(r[1]) for r in rows]


def door_batches(database, since) -> int:
    """The door's group commits among the jobs recorded at or after ``since`` (the jobs
    of one batch share their ``created_at``)."""
    with database.connection_context():
        return database.execute_sql("SELECT count(DISTINCT created_at) FROM jobs "
                                    "WHERE created_at >= %s", (since,)).fetchone()[0]


# -- one build's door and drain ------------------------------------------------------------


DOOR_P99_MS = 25.0  # DESIGN.md, set on its reference machine
STEADY_MS = (15.0, 100.0)  # DESIGN.md: submit->terminal p50, p99 at half the drain rate


@dataclass
class Figures:
    """What one build measured (NaN: not measured)."""

    door: float = math.nan  # accepted/s
    door_p99_ms: float = math.nan
    door_cpu_ms: float = math.nan  # web process CPU per accepted command
    drain: float = math.nan  # completed/s
    worker_cpu_ms: float = math.nan  # worker CPU per job, start-up included
    steady_ms: tuple[float, float] = (math.nan, math.nan)  # submit->terminal p50, p99
    speed: Speed | None = None  # the machine's, just before the accept phase (wrk only)
    steady_speed: Speed | None = None  # the machine's, just before the steady phase


def accept(args: argparse.Namespace, base: str, tokens: list[str], web: int,
           recorded: Callable[[], int], figures: Figures,
           bare: BareAiohttp | None = None) -> int:
    """The accept phase against ``base`` (workers stopped); the commands it recorded.
    With ``bare``, the machine's speed is measured first."""
    if bare is not None:
        figures.speed = bare.measure()
        print(f"the machine now: {figures.speed}")
    web_cpu = session_cpu(web)
    if shutil.which("wrk") and not args.python_client:
        accepted, seconds, pct, wrong = wrk_loop(base, tokens, args.seconds, args.connections)
        print(f"accept (wrk, {args.connections} connections, {seconds:.1f}s): "
              f"{accepted} accepted = {accepted / seconds:,.0f}/s; 202 latency "
              f"p50={pct.get('50')} p90={pct.get('90')} p99={pct.get('99')}"
              + (f"; {wrong}" if wrong else ""))
        figures.door_p99_ms = wrk_ms(pct.get("99"))
    else:
        seconds, latencies, statuses = asyncio.run(
            closed_loop(base, tokens, args.requests, args.connections))
        accepted = statuses.get(202, 0)
        print(f"accept (python client): {accepted} accepted in {seconds:.2f}s = "
              f"{accepted / seconds:,.0f}/s (statuses {statuses})")
        print("  " + latency_line("202 latency", latencies))
        figures.door_p99_ms = 1000 * percentile(sorted(latencies), 99)
    figures.door = accepted / seconds
    time.sleep(0.5)  # let the requests in flight when the client stopped land
    count = recorded()  # includes answers the client gave up waiting for
    web_cpu = session_cpu(web) - web_cpu
    figures.door_cpu_ms = 1000 * web_cpu / count
    print(f"  door CPU: {web_cpu:.2f} s for {count} commands = "
          f"{figures.door_cpu_ms:.3f} ms per command")
    return count


def report_drain(database: peewee.Database, offsets: str, worker: int, figures: Figures,
                 clocks: str) -> None:
    """Print and keep the drain rate and the workers' CPU per job; ``offsets`` selects each
    job's finish, in seconds after the drain's start."""
    with database.connection_context():
        finished = sorted(float(t) for (t,) in database.execute_sql(offsets))
    done, span = len(finished), finished[-1]
    figures.drain = done / span
    worker_cpu = session_cpu(worker)
    figures.worker_cpu_ms = 1000 * worker_cpu / done
    per_second = Counter(int(t) for t in finished)
    print(f"drain: {done} jobs completed in {span:.2f}s = {figures.drain:,.0f}/s ({clocks})")
    print("  completed in each second: "
          + " ".join(str(per_second[n]) for n in range(int(span) + 1)))
    print(f"  worker CPU (start-up included): {worker_cpu:.2f} s = "
          f"{figures.worker_cpu_ms:.3f} ms per job")


def run_bazaar(args: argparse.Namespace, env: dict[str, str], database: peewee.Database,
               bare: BareAiohttp | None = None) -> tuple[Figures, list[str]]:
    """Phases 1-3 on Bazaar's processes; the figures and the users' tokens."""
    stack, figures = Stack(env), Figures()
    try:
        tokens = mint_tokens(env, insert_users(database, "bench_", args.users, 0))
        stack.start_web()
        base = stack.api.base
        print(f"\n== Bazaar: 1 web process; {args.worker_processes} worker processes x "
              f"{args.worker_threads} threads; load generator: 1 process, "
              f"{args.connections} connections, {args.users} users; load {load()} ==")
        accepted = accept(args, base, tokens, stack.procs["web"].pid, lambda: job_count(database),
                          figures, bare)
        stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
        wait_drained(database, accepted)
        report_drain(database, "SELECT EXTRACT(EPOCH FROM finished_at - min(started_at) OVER ())"
                     " FROM jobs", stack.procs["worker"].pid, figures,
                     "first start to last finish, server clocks")

        rate = args.rate or max(50.0, figures.drain / 2)
        if bare is not None:
            figures.steady_speed = bare.measure()
            print(f"the machine now: {figures.steady_speed}")
        since = utcnow()
        client_cpu = time.process_time()
        web_cpu, worker_cpu = (session_cpu(stack.procs[name].pid) for name in ("web", "worker"))
        pacer = open_loop(base, tokens, rate, args.seconds)
        statuses, sent = dict(pacer.statuses), pacer.sent
        client_cpu = time.process_time() - client_cpu
        wait_drained(database, job_count(database))
        web_cpu = session_cpu(stack.procs["web"].pid) - web_cpu
        worker_cpu = session_cpu(stack.procs["worker"].pid) - worker_cpu
        per = 1000 / max(1, sent)
        print(f"steady: {sent} charges at {rate:,.0f}/s for {args.seconds:.0f}s "
              f"(statuses {statuses}); CPU per request: web {per * web_cpu:.3f} ms, "
              f"workers {per * worker_cpu:.3f} ms, the load generator {per * client_cpu:.3f} ms")
        latencies, waits = map(sorted, server_latencies(database, since))
        batches = door_batches(database, since)
        print(f"  written in {batches} group commits, {len(latencies) / max(1, batches):.1f} "
              "commands each")
        print("  " + latency_line("submit->terminal", latencies))
        print("  " + latency_line("  of which submit->started", waits))
        figures.steady_ms = (1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99))
    finally:
        stack.stop()
    return figures, tokens



def plain_rows(database: peewee.Database) -> int:
    """The plain actor's history rows."""
    return scalar(database, "SELECT count(*) FROM point_history WHERE ref = 'plain'")


def run_plain(args: argparse.Namespace, env: dict[str, str], database: peewee.Database,
              tokens: list[str], bare: BareAiohttp | None = None) -> Figures:
    """Phases 1 and 2 on the plain reference."""
    namespace = f"{env['REDIS_PREFIX']}-plain:dramatiq"  # under the scratch prefix
    stack = PlainStack({**env, "PLAIN_NAMESPACE": namespace}, module="bench.plain_charge")
    figures = Figures()
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        stack.start_web()
        print(f"\n== plain: 1 web process; {args.worker_processes} worker processes x "
              f"{args.worker_threads} threads; same users and tokens; load {load()} ==")
        queued = accept(args, stack.api.base, tokens, stack.procs["web"].pid,
                        lambda: client.hlen(f"{namespace}:plain.msgs"), figures, bare)
        stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
        deadline = time.perf_counter() + 300
        while (done := plain_rows(database)) < queued:
            if time.perf_counter() > deadline:
                raise SystemExit(f"plain: only {done}/{queued} rows after 300s; see its log")
            time.sleep(0.05)
        report_drain(database, "SELECT EXTRACT(EPOCH FROM created_at - min(created_at) OVER ())"
                     " FROM point_history WHERE ref = 'plain'", stack.procs["worker"].pid,
                     figures, "first to last commit, server clocks")
    finally:
        stack.stop()
        client.close()
    return figures


# -- pgbench: the database's own ceiling ---------------------------------------------------

CHARGE_SQL = """\\set uid random(:first, :last)
BEGIN;
UPDATE point_wallets SET balance = balance + 1, held = held - 0, updated_at = now()
  WHERE user_id = :uid AND balance <= 9999999 RETURNING balance \\gset
INSERT INTO point_history (user_id, type, amount, balance_after, ref, created_at)
  VALUES (:uid, 'CHARGE', 1, :balance, 'pgbench', now());
COMMIT;
"""
COUPON_SQL = """BEGIN;
SELECT "t1"."id", "t1"."name", "t1"."discount_type", "t1"."discount_value", "t1"."stock",
  "t1"."issued", "t1"."starts_at", "t1"."ends_at", "t1"."created_at"
  FROM "coupons" AS "t1" WHERE ("t1"."id" = :coupon) LIMIT 1;
INSERT INTO "user_coupons" ("user_id", "coupon_id", "used", "expires_at", "created_at")
  VALUES (nextval('pgbench_coupon_users'), :coupon, false, now() + interval '1 day', now())
  RETURNING "user_coupons"."id";
UPDATE "coupons" SET "issued" = ("coupons"."issued" + 1)
  WHERE (("coupons"."id" = :coupon) AND ("coupons"."issued" < "coupons"."stock"));
COMMIT;
"""


def run_pgbench(args: argparse.Namespace, env: dict[str, str],
                database: peewee.Database) -> tuple[float, float]:
    """The charge SQL, then the one-hot-row coupon SQL; their tx/s."""
    dbname = env["DATABASE_URL"].rsplit("/", 1)[1]
    clients = args.worker_processes * args.worker_threads
    print(f"\n== pgbench: {clients} clients, 2 threads, {args.seconds:.0f}s each, simple "
          f"protocol; load {load()} ==")
    with database.connection_context():
        first, last, count = database.execute_sql(
            "SELECT min(w.user_id), max(w.user_id), count(*) FROM point_wallets w "
            "JOIN users u ON u.id = w.user_id WHERE u.username LIKE 'bench\\_%%'").fetchone()
    if count != last - first + 1:
        raise SystemExit(f"pgbench: the bench users' ids {first}..{last} have gaps")
    charge = pgbench(dbname, CHARGE_SQL, args.seconds, clients, first=first, last=last)
    print(f"charge SQL (UPDATE ... RETURNING + INSERT, {count} random users): "
          f"{charge.tps:,.0f} tx/s, latency average {charge.latency_ms:.2f} ms"
          + (f"; {charge.error}" if charge.error else ""))

    # Every issue is a new (user, coupon): one fresh user per transaction, from a sequence.
    users = int(charge.tps * args.seconds * 1.5) if charge.tps > 0 else 200_000
    with database.connection_context():
        first, last = database.execute_sql(
            "WITH u AS (INSERT INTO users (username, password_hash, phone_verified, is_artist,"
            " is_admin, created_at) SELECT 'pgbench_' || g, 'x', false, false, false, now()"
            " FROM generate_series(1, %s) g RETURNING id) SELECT min(id), max(id) FROM u",
            (users + 1000,)).fetchone()
        database.execute_sql(f"CREATE SEQUENCE pgbench_coupon_users MINVALUE {first} "
                             f"MAXVALUE {last}")
        coupon = database.execute_sql(
            "INSERT INTO coupons (name, discount_type, discount_value, stock, issued, starts_at,"
            " ends_at, created_at) VALUES ('pgbench hot coupon', 'FIXED', 1000, 2000000000, 0,"
            " now() - interval '1 day', now() + interval '1 day', now()) RETURNING id"
        ).fetchone()[0]
    hot = pgbench(dbname, COUPON_SQL, args.seconds, clients, coupon=coupon)
    issued = scalar(database, "SELECT issued FROM coupons WHERE id = %s", (coupon,))
    print(f"coupon SQL, one hot row (SELECT + INSERT + guarded UPDATE): {hot.tps:,.0f} tx/s, "
          f"latency average {hot.latency_ms:.2f} ms; {issued:,} issued"
          + (f"; {hot.error}" if hot.error else ""))
    return charge.tps, hot.tps


# -- summary -------------------------------------------------------------------------------


def summary(args: argparse.Namespace, bazaar: Figures, plain: Figures,
            ceiling: tuple[float, float]) -> None:
    """Each figure for Bazaar and plain, their ratio and DESIGN's target; pgbench's."""
    print(f"\n== summary: Bazaar vs plain, same run (load {load()}) ==")
    print(f"{'figure':<42}{'Bazaar':>10}{'plain':>10}{'Bazaar/plain':>14}  target")

    def row(label: str, mine: float | str, theirs: float, target: str = "",
            fmt: str = "{:,.0f}") -> None:
        ratio = math.nan if isinstance(mine, str) or not theirs else mine / theirs
        cells = [v if isinstance(v, str) else "-" if math.isnan(v) else fmt.format(v)
                 for v in (mine, theirs, ratio)]
        if not math.isnan(ratio):
            cells[2] = f"{ratio:.2f}"
        print(f"{label:<42}{cells[0]:>10}{cells[1]:>10}{cells[2]:>14}  {target}".rstrip())

    def verdict(ok: bool, *figures: float) -> str:
        return "n/a" if any(math.isnan(f) for f in figures) else "met" if ok else "MISSED"

    row(f"door: accepted/s ({args.connections} connections)", bazaar.door, plain.door,
        f">= 1.5x plain: {verdict(bazaar.door >= 1.5 * plain.door, plain.door)}")
    p99_target = (bazaar.speed.verdict(bazaar.door_p99_ms, DOOR_P99_MS, "ms") if bazaar.speed
                  else f"<= {DOOR_P99_MS:g} ms (unscaled: no wrk for bare aiohttp): "
                       f"{verdict(bazaar.door_p99_ms <= DOOR_P99_MS)}")
    row("door: 202 p99 (ms)", bazaar.door_p99_ms, plain.door_p99_ms, p99_target, "{:.1f}")
    row("door: web CPU per request (ms)", bazaar.door_cpu_ms, plain.door_cpu_ms, "", "{:.3f}")
    row(f"drain: completed/s ({args.worker_processes} x {args.worker_threads})", bazaar.drain,
        plain.drain, f">= 0.8x plain: {verdict(bazaar.drain >= 0.8 * plain.drain, plain.drain)}")
    row("drain: worker CPU per job (ms)", bazaar.worker_cpu_ms, plain.worker_cpu_ms, "",
        "{:.3f}")
    p50, p99 = bazaar.steady_ms
    speed, (p50_target, p99_target) = bazaar.steady_speed, STEADY_MS
    row("steady: submit->terminal p50 / p99 (ms)", f"{p50:.0f} / {p99:.0f}", math.nan,
        f"p50 {speed.verdict(p50, p50_target, 'ms')}; p99 {speed.verdict(p99, p99_target, 'ms')}"
        if speed else f"p50 <= {p50_target:g}, p99 <= {p99_target:g} (unscaled): "
                      f"{verdict(p50 <= p50_target and p99 <= p99_target, p50)}")
    charge, hot = ceiling
    if not math.isnan(charge):
        print(f"database ceiling (pgbench, {args.worker_processes * args.worker_threads} clients, "
              f"{args.seconds:.0f}s): charge SQL {charge:,.0f} tx/s (Bazaar's drain is "
              f"{bazaar.drain / charge:.2f} of it, plain's {plain.drain / charge:.2f}); "
              f"one-hot-row coupon SQL {hot:,.0f} tx/s")


def main() -> None:
    """Run every phase and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="each timed phase")
    parser.add_argument("--requests", type=int, default=20_000, help="python client only")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None, help="steady phase rate (/s)")
    parser.add_argument("--python-client", action="store_true", help="don't use wrk")
    parser.add_argument("--skip-plain", action="store_true", help="no plain reference build")
    parser.add_argument("--skip-pgbench", action="store_true", help="no pgbench ceiling")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a plain kill too
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    with scratch_env(DB_POOL_SIZE="16") as env:
        database = connect_database(env["DATABASE_URL"], 4)
        bare = BareAiohttp(env) if shutil.which("wrk") and not args.python_client else None
        try:
            bazaar, tokens = run_bazaar(args, env, database, bare)
            plain = (Figures() if args.skip_plain
                     else run_plain(args, env, database, tokens, bare))
            ceiling = (math.nan, math.nan)
            if not args.skip_pgbench and shutil.which("pgbench"):
                ceiling = run_pgbench(args, env, database)
            elif not args.skip_pgbench:
                print("\nno pgbench on PATH: the database's ceiling is not measured")
            summary(args, bazaar, plain, ceiling)
        finally:
            database.close_all()
            if bare is not None:
                bare.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
