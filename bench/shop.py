"""Load generator for the shop: a first-come coupon burst, then mixed orders and payments.

Starts its own web process and Dramatiq workers (no scheduler) on a scratch database
and Redis prefix (``bench.common.scratch_env``), then runs two phases:

1. coupon burst -- the DESIGN target: 10,000 users, 100 coupons, all 10,000 jobs
   terminal within 5 s, exactly 100 issued. Set-up, not timed: N users and their wallets
   are inserted in bulk, their access tokens minted without HTTP, one coupon of stock S
   whose window covers now is created, the workers are started and waited for, and the
   client's connections are opened. Timed: every user POSTs ``/coupons/{id}/issue`` once,
   all at the same time (one aiohttp client, at most ``--connections`` in flight), then
   the ``jobs`` table is polled until every job is terminal. Prints accepted/s, the time
   from the first submit until all jobs were terminal, jobs/s end to end, and checks the
   invariant in the database: S issued (``user_coupons`` and ``coupons.issued``),
   N - S jobs failed with ``COUPON_SOLD_OUT``, nobody holds two. The time is judged by
   DESIGN's 5 s scaled by the machine's speed, measured just before the burst with
   ``bench.bare`` (``bench.common.Speed``; wrk needed), the unscaled verdict beside it.
2. orders + payments -- P products with large stock, U users with points; for D seconds
   C clients loop: ``POST /orders`` (1-3 random lines), then ``POST /orders/{id}/payment``,
   both with ``Prefer: wait=5`` (and a long poll of the job should that not suffice).
   Prints orders/s, payments/s, the submit -> terminal latency seen by the client, and
   checks that the stock taken equals the units ordered, that the points spent equal the
   paid orders' ``pay_amount`` and that every wallet equals the sum of its history.
   Then ``bench.charge``'s plain drain runs on the same database, and the orders rate is
   printed as a ratio to it (the DESIGN target: >= 0.15 x plain drain, each).

Every phase also prints where the CPU went (web, workers, PostgreSQL, Redis, this load
generator, and the whole machine, which other people's work may share), because all of
them run on the same few cores.

Usage: ``python -m bench.shop [--users N] [--stock S] [--products P] [--buyers U]
[--clients C] [--seconds D] [--skip-burst] [--skip-orders]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import peewee
import redis
import redis.asyncio as aioredis

from bench.common import BareAiohttp, latency_line, machine, scratch_env
from db.connection import connect_database
from db.models import PointHistory, PointWallet, Product, User
from db.settings import Settings
from jobs import coupons
from jobs.clock import utcnow
from tests.support import Stack
from web.auth import Tokens
from workers.broker import dramatiq_namespace

API = "/api/v1"
TERMINAL = ("succeeded", "failed")
CHUNK = 1_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- set-up straight into the database ----------------------------------------------------


def insert_users(database: peewee.Database, prefix: str, count: int, points: int) -> list[int]:
    """Insert ``count`` users with wallets of ``points`` (and the matching CHARGE); their ids."""
    now = utcnow()
    ids: list[int] = []
    with database.connection_context(), database.atomic():
        for start in range(0, count, CHUNK):
            rows = [{"username": f"{prefix}{n}", "password_hash": "bench-not-a-hash",
                     "phone": None, "phone_verified": False, "is_artist": False,
                     "is_admin": False, "created_at": now}
                    for n in range(start, min(count, start + CHUNK))]
            ids += [row[0] for row in User.insert_many(rows).returning(User.id).tuples()]
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            PointWallet.insert_many(
                [{"user": uid, "balance": points, "updated_at": now} for uid in chunk]
            ).execute()
            if points:
                PointHistory.insert_many(
                    [{"user": uid, "type": "CHARGE", "amount": points, "balance_after": points,
                      "ref": "bench:setup", "created_at": now} for uid in chunk]
                ).execute()
    return ids


def mint_tokens(env: dict[str, str], user_ids: list[int]) -> list[str]:
    """Valid access tokens for ``user_ids``, signed with the stack's secret (no HTTP)."""
    client = aioredis.Redis.from_url(env["REDIS_URL"])  # never used: only for revocation
    tokens = Tokens(env["JWT_SECRET"], 3600, 3600, client, env["REDIS_PREFIX"])
    return [tokens.issue(uid)["access_token"] for uid in user_ids]


def insert_products(database: peewee.Database, count: int, stock: int,
                    rng: random.Random) -> dict[int, int]:
    """Insert ``count`` products of ``stock`` units each; ``{id: initial stock}``."""
    now = utcnow()
    rows = [{"name": f"bench product {n}", "price": rng.randrange(100, 10_000, 100),
             "stock": stock, "description": "", "created_at": now} for n in range(count)]
    with database.connection_context():
        ids = [row[0] for row in Product.insert_many(rows).returning(Product.id).tuples()]
    return dict.fromkeys(ids, stock)


def scalar(database: peewee.Database, sql: str, params: tuple = ()) -> Any:
    """The first column of the first row of a query."""
    with database.connection_context():
        return database.execute_sql(sql, params).fetchone()[0]


# -- where the CPU goes ------------------------------------------------------------------


def cpu_snapshot(sessions: dict[str, int],
                 dbname: str | None) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each interesting process: ``{pid: (group, seconds)}``.

    Groups: the named sessions (Stack starts every process in a session of its own, so a
    worker's forked children count with it), ``postgres`` (the backends serving our
    scratch database, told apart by their process title; with ``dbname`` None, every
    PostgreSQL process, the WAL writer and checkpointer too) and ``redis`` (the server,
    which other people's work may share).
    """
    by_sid = {sid: name for name, sid in sessions.items()}
    seen: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2:].split()  # fields[0] is field 3 of proc(5)
            group = by_sid.get(int(fields[3]))
            if group is None and comm.startswith("postgres"):
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    ours = dbname is None or f" {dbname} ".encode() in f.read()
                group = "postgres" if ours else None
            elif group is None and comm.startswith("redis"):
                group = "redis"
        except OSError:  # gone meanwhile
            continue
        if group is not None:
            seen[int(entry.name)] = (group, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return seen


def machine_busy() -> float:
    """CPU seconds the whole machine has spent outside idle and iowait."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU seconds per group between ``start()`` and ``line()``."""

    sessions: dict[str, int]
    dbname: str
    began: tuple[dict[int, tuple[str, float]], float, float, float] | None = None

    def start(self) -> None:
        """Remember the counters now."""
        t = os.times()
        self.began = (cpu_snapshot(self.sessions, self.dbname), t.user + t.system, machine_busy(),
                      time.perf_counter())

    def line(self) -> str:
        """``cpu: web 3.1s, workers ...`` since ``start()``."""
        assert self.began is not None
        before, own, busy, wall = self.began
        spent: Counter[str] = Counter()
        for pid, (group, seconds) in cpu_snapshot(self.sessions, self.dbname).items():
            spent[group] += seconds - before.get(pid, (group, 0.0))[1]
        t = os.times()
        spent["generator"] = t.user + t.system - own
        wall = time.perf_counter() - wall
        cores = os.cpu_count() or 1
        parts = ", ".join(f"{g} {spent[g]:.1f}s"
                          for g in (*self.sessions, "postgres", "redis", "generator"))
        busy = machine_busy() - busy
        return (f"cpu over {wall:.1f}s wall ({cores} cores = {wall * cores:.1f} cpu-s): {parts}; "
                f"machine busy {busy:.1f}s, of which not ours {busy - spent.total():.1f}s")


# -- phase 1: the coupon burst -----------------------------------------------------------


def wait_for_workers(env: dict[str, str], processes: int, timeout: float = 60) -> float:
    """Seconds until every worker process has polled the broker (its heartbeat is in Redis)."""
    key = f"{dramatiq_namespace(Settings.from_env(env))}:__heartbeats__"
    client = redis.Redis.from_url(env["REDIS_URL"])
    began = time.perf_counter()
    try:
        while time.perf_counter() - began < timeout:
            if client.zcard(key) >= processes:
                return time.perf_counter() - began
            time.sleep(0.1)
    finally:
        client.close()
    raise SystemExit(f"workers not polling the broker after {timeout:.0f}s; see their log")


def terminal_jobs(database: peewee.Database) -> int:
    """Jobs that are succeeded or failed."""
    return scalar(database, "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")


def wait_terminal(database: peewee.Database, expected: int, timeout: float = 120) -> float:
    """``time.perf_counter()`` when ``expected`` jobs were seen terminal (polled every 20 ms)."""
    deadline = time.perf_counter() + timeout
    while (done := terminal_jobs(database)) < expected:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {done}/{expected} jobs terminal after {timeout:.0f}s")
        time.sleep(0.02)
    return time.perf_counter()


@dataclass
class Burst:
    """What the client saw of the burst."""

    began: float
    ended: float
    statuses: Counter[str]
    latencies: list[float] = field(default_factory=list)


async def coupon_burst(base: str, coupon_id: int, tokens: list[str], connections: int,
                       warm: bool) -> Burst:
    """Every token asks for the coupon once, all at the same time."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as s:
        if warm:  # open the connections first: the server's listen backlog is only 128
            for _ in range(2):
                await asyncio.gather(*(_get(s, "/healthz") for _ in range(connections)))
        path = f"{API}/coupons/{coupon_id}/issue"
        in_flight = asyncio.Semaphore(connections)  # so latency excludes waiting for a turn

        async def one(token: str) -> None:
            async with in_flight:
                started = time.perf_counter()
                try:
                    async with s.post(path, json={},
                                      headers={"Authorization": f"Bearer {token}"}) as r:
                        await r.read()
                    statuses[str(r.status)] += 1
                    latencies.append(time.perf_counter() - started)
                except (aiohttp.ClientError, TimeoutError) as e:
                    statuses[type(e).__name__] += 1

        began = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tokens))
        return Burst(began, time.perf_counter(), statuses, latencies)


async def _get(s: aiohttp.ClientSession, path: str) -> None:
    async with s.get(path) as r:
        await r.read()


def burst_invariant(database: peewee.Database, coupon_id: int, users: int,
                    stock: int) -> tuple[bool, list[str]]:
    """Check exactly-stock-issued, one per user, the rest refused as sold out."""
    winners = min(users, stock)
    issued_rows = scalar(database, "SELECT count(*) FROM user_coupons WHERE coupon_id = %s",
                         (coupon_id,))
    issued_col = scalar(database, "SELECT issued FROM coupons WHERE id = %s", (coupon_id,))
    doubles = scalar(database, "SELECT count(*) FROM (SELECT user_id FROM user_coupons "
                     "GROUP BY user_id, coupon_id HAVING count(*) > 1) d")
    with database.connection_context():
        statuses = dict(database.execute_sql(
            "SELECT status, count(*) FROM jobs WHERE type = 'coupons.issue' GROUP BY status"
        ).fetchall())
        errors = Counter(json.loads(raw)["code"] for (raw,) in database.execute_sql(
            "SELECT error FROM jobs WHERE type = 'coupons.issue' AND status = 'failed'"))
    checks = [
        (issued_rows == winners, f"user_coupons rows {issued_rows} (want {winners})"),
        (issued_col == winners, f"coupons.issued {issued_col} (want {winners})"),
        (errors["COUPON_SOLD_OUT"] == users - winners,
         f"failed COUPON_SOLD_OUT {errors['COUPON_SOLD_OUT']} (want {users - winners})"),
        (doubles == 0, f"users holding two {doubles} (want 0)"),
        (statuses.get("succeeded", 0) == winners,
         f"jobs succeeded {statuses.get('succeeded', 0)} (want {winners})"),
    ]
    notes = [f"{'ok  ' if ok else 'BAD '} {text}" for ok, text in checks]
    notes.append(f"jobs by status {statuses}; failures by code {dict(errors)}")
    return all(ok for ok, _ in checks), notes


BURST_SECONDS = 5.0  # DESIGN.md, set on its reference machine


def run_burst(args: argparse.Namespace, env: dict[str, str], stack: Stack,
              database: peewee.Database, meter: CpuMeter) -> bool:
    """Phase 1; True if the invariant holds (the time is reported, not part of that)."""
    print(f"\n== coupon burst: {args.users:,} users, stock {args.stock:,} ==")
    t = time.perf_counter()
    ids = insert_users(database, "burst_", args.users, 0)
    tokens = mint_tokens(env, ids)
    now = utcnow()
    with database.connection_context():
        coupon = coupons.create_coupon("bench burst", "FIXED", 1_000, args.stock,
                                       now - timedelta(minutes=1), now + timedelta(hours=1), now)
    print(f"set-up: {len(ids):,} users + tokens + coupon {coupon['id']} in "
          f"{time.perf_counter() - t:.1f}s; workers polling after "
          f"{wait_for_workers(env, args.worker_processes):.1f}s; load {load()}")
    speed = None
    if shutil.which("wrk"):
        bare = BareAiohttp(env)
        try:
            speed = bare.measure()
        finally:
            bare.stop()
        print(f"the machine now: {speed}")
    time.sleep(args.settle)

    meter.start()
    burst = asyncio.run(coupon_burst(stack.api.base, coupon["id"], tokens, args.connections,
                                     not args.cold))
    at_submit_end = terminal_jobs(database)
    recorded = scalar(database, "SELECT count(*) FROM jobs")
    done_at = wait_terminal(database, recorded)
    cpu = meter.line()

    accepted = burst.statuses["202"] + burst.statuses["200"]
    submit = burst.ended - burst.began
    total = done_at - burst.began
    with database.connection_context():
        created, first_start, last_finish = database.execute_sql(
            "SELECT EXTRACT(EPOCH FROM max(created_at) - min(created_at)), "
            "EXTRACT(EPOCH FROM max(finished_at) - min(started_at)), "
            "EXTRACT(EPOCH FROM max(finished_at) - min(created_at)) FROM jobs").fetchone()
    print(f"submit: {accepted:,} accepted of {len(tokens):,} in {submit:.2f}s = "
          f"{accepted / submit:,.0f}/s (statuses {dict(burst.statuses)}); "
          f"{at_submit_end:,} already terminal when the last answer came")
    print("  " + latency_line(f"answer latency ({args.connections} in flight)", burst.latencies))
    print(f"first submit -> all {recorded:,} jobs terminal: {total:.2f}s = "
          f"{recorded / total:,.0f} jobs/s end to end; target " + (
              speed.verdict(total, BURST_SECONDS, "s") if speed else
              f"<= 5 s (unscaled: no wrk for bare aiohttp): "
              f"{'met' if total <= BURST_SECONDS else 'MISSED'}"))
    print(f"  server clocks: jobs recorded over {float(created):.2f}s, worked from first start "
          f"to last finish {float(first_start):.2f}s, first record to last finish "
          f"{float(last_finish):.2f}s")
    print("  " + cpu)
    ok, notes = burst_invariant(database, coupon["id"], len(tokens), args.stock)
    for note in notes:
        print("  " + note)
    print(f"coupon invariant: {'PASS' if ok else 'FAIL'}")
    return ok


# -- phase 2: orders and payments --------------------------------------------------------


@dataclass
class Mix:
    """What the clients saw of the order + payment loop."""

    seconds: float = 0.0
    create: list[float] = field(default_factory=list)
    pay: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


async def command(s: aiohttp.ClientSession, path: str, body: dict, token: str,
                  wait: int) -> dict | str:
    """Send a command with ``Prefer: wait`` and long-poll until terminal; job or error tag."""
    headers = {"Authorization": f"Bearer {token}", "Prefer": f"wait={wait}"}
    async with s.post(path, json=body, headers=headers) as r:
        if r.status not in (200, 202):
            return f"http {r.status}"
        job = await r.json()
    for _ in range(6):  # at most 30 s more
        if job["status"] in TERMINAL:
            return job
        async with s.get(f"{API}/jobs/{job['id']}?wait=5", headers=headers) as r:
            job = await r.json()
    return "not terminal after 30 s"


async def order_loop(base: str, tokens: list[str], product_ids: list[int], clients: int,
                     seconds: float, wait: int, seed: int) -> Mix:
    """``clients`` loops of create-then-pay for ``seconds`` (a started round is finished)."""
    mix = Mix()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    began = time.perf_counter()
    stop_at = began + seconds
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as s:

        async def client(n: int) -> None:
            rng = random.Random(seed * 1_000 + n)
            while time.perf_counter() < stop_at:
                token = rng.choice(tokens)
                lines = [{"product_id": pid, "quantity": rng.randint(1, 3)}
                         for pid in rng.sample(product_ids, rng.randint(1, 3))]
                started = time.perf_counter()
                try:
                    job = await command(s, f"{API}/orders", {"items": lines}, token, wait)
                except (aiohttp.ClientError, TimeoutError) as e:
                    mix.outcomes[f"create {type(e).__name__}"] += 1
                    continue
                if isinstance(job, str) or job["status"] != "succeeded":
                    mix.outcomes[f"create {tag(job)}"] += 1
                    continue
                mix.create.append(time.perf_counter() - started)
                mix.outcomes["create succeeded"] += 1
                started = time.perf_counter()
                try:
                    job = await command(s, f"{API}/orders/{job['result']['order_id']}/payment",
                                        {}, token, wait)
                except (aiohttp.ClientError, TimeoutError) as e:
                    mix.outcomes[f"pay {type(e).__name__}"] += 1
                    continue
                mix.outcomes[f"pay {tag(job)}"] += 1
                if not isinstance(job, str) and job["status"] == "succeeded":
                    mix.pay.append(time.perf_counter() - started)

        await asyncio.gather(*(client(n) for n in range(clients)))
    mix.seconds = time.perf_counter() - began
    return mix


def tag(job: dict | str) -> str:
    """``succeeded``, ``failed CODE`` or the error tag of :func:`command`."""
    if isinstance(job, str):
        return job
    return job["status"] if job["status"] != "failed" else f"failed {job['error']['code']}"


def order_consistency(database: peewee.Database,
                      initial: dict[int, int]) -> tuple[bool, list[str]]:
    """Stock taken == units ordered; points spent == paid amounts; wallets == history."""
    with database.connection_context():
        ordered = dict(database.execute_sql(
            "SELECT p.id, p.stock + coalesce((SELECT sum(oi.quantity) FROM order_items oi "
            "JOIN orders o ON o.id = oi.order_id WHERE oi.product_id = p.id "
            "AND o.status <> 'EXPIRED'), 0) FROM products p").fetchall())
        statuses = dict(database.execute_sql(
            "SELECT status, count(*) FROM orders GROUP BY status").fetchall())
    wrong = [pid for pid, stock in initial.items() if ordered.get(pid) != stock]
    spent = scalar(database, "SELECT coalesce(sum(amount), 0) FROM point_history "
                   "WHERE type = 'USE'")
    paid = scalar(database, "SELECT coalesce(sum(pay_amount), 0) FROM orders "
                  "WHERE status = 'PAID'")
    drifted = scalar(database, "SELECT count(*) FROM point_wallets w LEFT JOIN "
                     "(SELECT user_id, sum(amount) AS total FROM point_history GROUP BY user_id)"
                     " h ON h.user_id = w.user_id WHERE w.balance <> coalesce(h.total, 0)")
    checks = [
        (not wrong, f"products whose stock + units ordered != initial stock: {len(wrong)} "
                    f"of {len(initial)} (want 0)"),
        (-spent == paid, f"points spent {-spent:,} vs paid orders' pay_amount {paid:,}"),
        (drifted == 0, f"wallets != sum of their history: {drifted} (want 0)"),
    ]
    notes = [f"{'ok  ' if ok else 'BAD '} {text}" for ok, text in checks]
    notes.append(f"orders by status {statuses}")
    return all(ok for ok, _ in checks), notes


def run_orders(args: argparse.Namespace, env: dict[str, str], stack: Stack,
               database: peewee.Database, meter: CpuMeter) -> tuple[bool, float]:
    """Phase 2: whether stock and points are consistent, and orders completed per second
    (payments complete at the same rate: each client pays the order it made)."""
    print(f"\n== orders + payments: {args.clients} clients, {args.buyers} users, "
          f"{args.products} products, {args.seconds:.0f}s, Prefer: wait={args.wait} ==")
    rng = random.Random(args.seed)
    initial = insert_products(database, args.products, 1_000_000, rng)
    tokens = mint_tokens(env, insert_users(database, "buyer_", args.buyers, 10_000_000))
    wait_for_workers(env, args.worker_processes)
    print(f"load {load()}")

    meter.start()
    mix = asyncio.run(order_loop(stack.api.base, tokens, list(initial), args.clients,
                                 args.seconds, args.wait, args.seed))
    cpu = meter.line()
    created, paid = len(mix.create), len(mix.pay)
    print(f"orders created: {created:,} in {mix.seconds:.2f}s = {created / mix.seconds:,.0f}/s; "
          f"payments completed: {paid:,} = {paid / mix.seconds:,.0f}/s")
    print(f"  outcomes {dict(mix.outcomes)}")
    if mix.create:
        print("  " + latency_line("create submit->terminal (client)", mix.create))
    if mix.pay:
        print("  " + latency_line("pay submit->terminal (client)", mix.pay))
    print("  " + cpu)
    # Stragglers of an abandoned poll would still change the books: let them land first.
    wait_terminal(database, scalar(database, "SELECT count(*) FROM jobs"), timeout=60)
    ok, notes = order_consistency(database, initial)
    for note in notes:
        print("  " + note)
    print(f"order consistency: {'PASS' if ok else 'FAIL'}")
    return ok, min(created, paid) / mix.seconds


def run_plain_drain(args: argparse.Namespace, env: dict[str, str],
                    database: peewee.Database) -> float:
    """``bench.charge``'s plain drain (a plain Dramatiq actor doing a charge's SQL, the
    same worker shape) on this run's database: the reference of the orders target."""
    from bench.charge import run_plain

    tokens = mint_tokens(env, insert_users(database, "plain_", 200, 0))
    reference = argparse.Namespace(seconds=args.seconds, connections=64, requests=20_000,
                                   python_client=False, worker_processes=args.worker_processes,
                                   worker_threads=args.worker_threads)
    return run_plain(reference, env, database, tokens).drain


# -- main ---------------------------------------------------------------------------------


def load() -> str:
    """The 1-minute load average (others' work shares this machine)."""
    return f"{os.getloadavg()[0]:.2f}"


def code_version() -> str:
    """The commit measured, and which files differ from it (benchmarks of a dirty tree)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                              ).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
             .splitlines()]
    return git("rev-parse", "--short", "HEAD").strip() + (
        f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")


def parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=10_000, help="burst: users, one request each")
    p.add_argument("--stock", type=int, default=100, help="burst: coupons to hand out")
    p.add_argument("--connections", type=int, default=256, help="burst: requests in flight")
    p.add_argument("--cold", action="store_true",
                   help="burst: do not open the connections before the timed part")
    p.add_argument("--settle", type=float, default=2.0,
                   help="burst: seconds to wait after the workers first poll")
    p.add_argument("--products", type=int, default=20, help="orders: products")
    p.add_argument("--buyers", type=int, default=200, help="orders: users with points")
    p.add_argument("--clients", type=int, default=32, help="orders: concurrent clients")
    p.add_argument("--seconds", type=float, default=10, help="orders: duration")
    p.add_argument("--wait", type=int, default=5, help="orders: Prefer: wait=N")
    p.add_argument("--worker-processes", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-burst", action="store_true")
    p.add_argument("--skip-orders", action="store_true")
    p.add_argument("--skip-plain", action="store_true",
                   help="orders: no plain drain to compare with")
    return p.parse_args()


def main() -> None:
    """Run the phases and print the figures; exit 1 if an invariant fails."""
    args = parse_args()
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    print(f"processes: 1 web; {args.worker_processes} worker processes x "
          f"{args.worker_threads} threads; no scheduler; load generator: 1 process "
          f"(burst {args.connections} connections, orders {args.clients} clients); "
          f"load {load()}")
    results: list[bool] = []
    with scratch_env(DB_POOL_SIZE="16") as env:
        stack = Stack(env)
        database = connect_database(env["DATABASE_URL"], 4)
        try:
            stack.start_web()
            stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
            meter = CpuMeter({"web": stack.procs["web"].pid,
                              "workers": stack.procs["worker"].pid},
                             env["DATABASE_URL"].rsplit("/", 1)[1])
            if not args.skip_burst:
                results.append(run_burst(args, env, stack, database, meter))
            if not args.skip_orders:
                ok, orders = run_orders(args, env, stack, database, meter)
                results.append(ok)
            stack.stop()
            if not args.skip_orders and not args.skip_plain:
                plain = run_plain_drain(args, env, database)
                print(f"\norders + payments vs the plain drain, same run: {orders:,.0f}/s each "
                      f"= {orders / plain:.3f} x {plain:,.0f}/s (target >= 0.15 each)")
        finally:
            stack.stop()
            database.close_all()
    print(f"\noverall: {'PASS' if all(results) else 'FAIL'}")
    if not all(results):
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
