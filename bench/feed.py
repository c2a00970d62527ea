"""Load generator for the social feed: likes and comments on one hot post and on many, and
alarms pushed live to their authors; every figure next to a plain reference build.

On a scratch database and Redis prefix, starts 2 web processes (A and B) and a worker pool
(``--worker-processes`` x ``--worker-threads``); users, posts and tokens are put straight
into the database (no HTTP). Then:

1. hot: ``--users`` users each like ONE post (of one author) over ``--connections``
   connections to web A (closed loop), then the same users comment on it;
2. spread: the same number of likes, then comments, spread over ``--posts`` posts by
   ``--authors`` authors (user n takes post n mod P);
3. alarms: ``--streams`` authors (one post each) subscribe to ``GET /alarms/subscribe`` on
   web A, read by a subscriber process of their own; then likes of their posts go through
   web B at ``--rate`` per second for ``--paced-seconds`` (open loop). For each alarm:
   its commit -> its delivery at the subscriber. The commit time is the liking job's
   ``finished_at`` (written in the same transaction, just before the commit); an alarm
   ``(recipient, number)`` is matched to its job through the alarm row's liker and post.
   Each alarm must arrive exactly once (DESIGN: p99 <= 100 ms).
4. plain: the Bazaar processes are stopped and ``bench/plain_like.py`` runs phases 1 and
   2 again (its own posts, the same users and tokens): one web process whose handler only
   checks the JWT, validates the path id and calls a Dramatiq actor's ``send``, and that
   actor doing the like's (or comment's) SQL in one transaction, with the same worker
   processes and threads. The plain build writes no alarms.

Per phase: accepted/s at the door (202 answers / seconds of the closed loop) with the
answer latency percentiles; completed/s end to end (commands / (last commit - first
send); Bazaar's commits are the jobs' ``finished_at``, plain's the rows' commit-time
stamps); CPU seconds per command of the web, worker and PostgreSQL processes; and that
``like_count`` and ``comment_count`` equal the rows behind them. A plain fan-out for the
alarms is not built. All clocks are this machine's.

Usage: ``python -m bench.feed [--quick] [--users 2000] [--posts 500] [--authors 100]
[--streams 1000] [--rate 100] [--paced-seconds 5] [--connections 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

import aiohttp
import msgspec
import peewee

from bench.charge import closed_loop
from bench.common import PlainStack, latency_line, machine, open_loop, percentile, scratch_env
from bench.shop import (
    CpuMeter,
    code_version,
    cpu_snapshot,
    insert_users,
    load,
    mint_tokens,
    scalar,
    wait_for_workers,
    wait_terminal,
)
from db.connection import connect_database
from db.models import Post
from jobs.clock import utcnow
from tests.support import Stack

API = "/api/v1"


# -- set-up and measuring --------------------------------------------------------------


def insert_posts(database: peewee.Database, authors: list[int], count: int) -> list[int]:
    """``count`` posts, the n-th by ``authors[n % len(authors)]``; their ids."""
    now = utcnow()
    rows = [{"author": authors[n % len(authors)], "title": f"bench post {n}",
             "body": "a post to like", "created_at": now, "updated_at": now}
            for n in range(count)]
    with database.connection_context():
        return [r[0] for r in Post.insert_many(rows).returning(Post.id).tuples()]


def stamp(moment) -> float:
    """A naive-UTC timestamp column as epoch seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


class Meter(CpuMeter):
    """A CpuMeter that also hands out its seconds per group."""

    def spent(self) -> Counter[str]:
        """CPU seconds per group since ``start()``."""
        assert self.began is not None
        before, spent = self.began[0], Counter()
        for pid, (group, seconds) in cpu_snapshot(self.sessions, self.dbname).items():
            spent[group] += seconds - before.get(pid, (group, 0.0))[1]
        return spent


@dataclass
class Phase:
    """What one closed-loop phase measured."""

    name: str
    sent: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    began: float  # epoch seconds, just before the first request
    committed: int = 0
    first_commit: float = math.nan
    last_commit: float = math.nan
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu: Counter[str] = field(default_factory=Counter)
    cpu_line: str = ""
    server: list[float] = field(default_factory=list)  # Bazaar: created_at -> finished_at

    @property
    def accepted(self) -> float:
        """202 answers per second of the closed loop."""
        return self.statuses.get(202, 0) / self.seconds

    @property
    def completed(self) -> float:
        """Commands per second from the first send to the last commit."""
        return self.sent / (self.last_commit - self.began)

    def per_command(self, groups: tuple[str, ...]) -> str:
        """CPU milliseconds per command of each group."""
        return ", ".join(f"{g} {1000 * self.cpu[g] / self.sent:.2f} ms" for g in groups)

    def report(self, build: str, doors: tuple[str, ...]) -> None:
        """Print the phase's figures."""
        print(f"\n{self.name} ({build}): {self.sent:,} sent in {self.seconds:.2f}s = "
              f"{self.accepted:,.0f}/s accepted (statuses {self.statuses}; load {load()})")
        print("  " + latency_line("door (202)", self.latencies))
        print(f"  completed: {self.committed:,} committed {dict(self.outcomes)}; last commit "
              f"{self.last_commit - self.began:.2f}s after the first send = "
              f"{self.completed:,.0f}/s end to end; first to last commit "
              f"{self.last_commit - self.first_commit:.2f}s")
        if self.server:
            print("  " + latency_line("job recorded -> committed (created_at -> finished_at)",
                                      self.server))
        print("  " + self.cpu_line)
        print("  cpu per command: " + self.per_command((*doors, "workers", "postgres")))


def run_loop(name: str, base: str, tokens: list[str], n: int, connections: int,
             path: Callable[[int], str], body: Callable[[int], dict], meter: Meter) -> Phase:
    """Send ``n`` commands over ``connections`` connections, back to back."""
    meter.start()
    began = time.time()
    seconds, latencies, statuses = asyncio.run(
        closed_loop(base, tokens, n, connections, path, body))
    return Phase(name, n, seconds, latencies, statuses, began)


def finish_bazaar(phase: Phase, database: peewee.Database, meter: Meter, job_type: str,
                  since) -> None:
    """Wait until every job is terminal; fill in the commits and the CPU."""
    wait_terminal(database, scalar(database, "SELECT count(*) FROM jobs"))
    phase.cpu, phase.cpu_line = meter.spent(), meter.line()
    with database.connection_context():
        rows = database.execute_sql(
            "SELECT status, count(*), min(finished_at), max(finished_at) FROM jobs "
            "WHERE type = %s AND created_at >= %s GROUP BY status", (job_type, since)).fetchall()
        phase.server = [float(seconds) for (seconds,) in database.execute_sql(
            "SELECT EXTRACT(EPOCH FROM finished_at - created_at) FROM jobs "
            "WHERE type = %s AND created_at >= %s", (job_type, since))]
    phase.outcomes = {status: count for status, count, _, _ in rows}
    phase.committed = phase.outcomes.get("succeeded", 0)
    phase.first_commit = min(stamp(first) for _, _, first, _ in rows)
    phase.last_commit = max(stamp(last) for _, _, _, last in rows)


def finish_plain(phase: Phase, database: peewee.Database, meter: Meter, table: str,
                 posts: list[int], timeout: float = 120) -> None:
    """Wait until every accepted command's row is there; fill in the commits and the CPU."""
    sql = (f"SELECT count(*), min(created_at), max(created_at) FROM {table} "
           "WHERE post_id = ANY(%s)")
    deadline = time.perf_counter() + timeout
    while (row := scalar_row(database, sql, (posts,)))[0] < phase.statuses.get(202, 0):
        if time.perf_counter() > deadline:
            raise SystemExit(f"plain: only {row[0]} rows after {timeout:.0f}s; see its log")
        time.sleep(0.02)
    phase.cpu, phase.cpu_line = meter.spent(), meter.line()
    phase.committed, first, last = row
    phase.outcomes = {"rows": phase.committed}
    phase.first_commit, phase.last_commit = stamp(first), stamp(last)


def scalar_row(database: peewee.Database, sql: str, params: tuple = ()) -> tuple:
    """The first row of a query."""
    with database.connection_context():
        return database.execute_sql(sql, params).fetchone()


def count_checks(database: peewee.Database, posts: list[int], likes: int,
                 comments: int) -> list[tuple[bool, str]]:
    """Each post's counts equal its rows, and the totals are what was sent."""
    drift_likes, drift_comments, like_sum, comment_sum, like_rows, comment_rows = scalar_row(
        database,
        "SELECT count(*) FILTER (WHERE like_count <> l.n), count(*) FILTER "
        "(WHERE comment_count <> c.n), sum(like_count), sum(comment_count), sum(l.n), sum(c.n) "
        "FROM posts p, LATERAL (SELECT count(*) AS n FROM post_likes WHERE post_id = p.id) l, "
        "LATERAL (SELECT count(*) AS n FROM post_comments WHERE post_id = p.id) c "
        "WHERE p.id = ANY(%s)", (posts,))
    return [
        (drift_likes == 0 and like_sum == like_rows == likes,
         f"like_count {like_sum} == rows {like_rows} == {likes} sent "
         f"({drift_likes} of {len(posts)} posts drifted)"),
        (drift_comments == 0 and comment_sum == comment_rows == comments,
         f"comment_count {comment_sum} == rows {comment_rows} == {comments} sent "
         f"({drift_comments} of {len(posts)} posts drifted)"),
    ]


def pg_connections(database: peewee.Database) -> str:
    """How many PostgreSQL connections are open, and by whom (others' tests share them)."""
    with database.connection_context():
        mine, total, most = database.execute_sql(
            "SELECT count(*) FILTER (WHERE datname = current_database()), count(*), "
            "current_setting('max_connections')::int FROM pg_stat_activity "
            "WHERE backend_type = 'client backend'").fetchone()
    return f"PostgreSQL connections: {mine} ours, {total - mine} others', max {most}"


def connections_free(database: peewee.Database) -> int:
    """PostgreSQL connections still free for clients."""
    return scalar(database, "SELECT current_setting('max_connections')::int - "
                  "current_setting('superuser_reserved_connections')::int - count(*) "
                  "FROM pg_stat_activity WHERE backend_type = 'client backend'")


def print_checks(checks: list[tuple[bool, str]]) -> bool:
    """Print the checks; True if all hold."""
    for ok, text in checks:
        print(f"  {'ok ' if ok else 'BAD'} {text}")
    return all(ok for ok, _ in checks)


# -- the alarm streams ------------------------------------------------------------------


def subscribe(base: str, tokens: list[str], out: multiprocessing.Queue,
              ready: multiprocessing.Event, stop: multiprocessing.Event) -> None:
    """A process of one ``/alarms/subscribe`` client per token, reading until ``stop``;
    puts ``[[(id, event, data, received_at), ...], ...]`` (one list per token), then
    the statuses of the streams that did not open."""

    async def one(s: aiohttp.ClientSession, token: str, opened: list, failed: Counter) -> list:
        seen: list[tuple[int, str, str, float]] = []
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        try:
            async with s.get(f"{API}/alarms/subscribe", headers=headers,
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                if r.status != 200:
                    failed[r.status] += 1
                    return seen
                opened.append(1)
                number, name, data = None, "", ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id:"):
                        number = int(line[3:])
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and number is not None:
                        seen.append((number, name, data, time.time()))
                        number, name, data = None, "", ""
        except aiohttp.ClientError as e:
            failed[type(e).__name__] += 1
        except asyncio.CancelledError:
            pass  # told to stop
        return seen

    async def run() -> None:
        opened: list = []
        failed: Counter = Counter()
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as s:
            tasks = [asyncio.create_task(one(s, t, opened, failed)) for t in tokens]
            while len(opened) + sum(failed.values()) < len(tokens):
                await asyncio.sleep(0.05)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            out.put((list(await asyncio.gather(*tasks)), dict(failed)))

    asyncio.run(run())


async def paced(base: str, tokens: list[str], path: Callable[[int], str], rate: float,
                total: int) -> tuple[dict[int, int], list[float]]:
    """Open loop: one like every ``1 / rate`` s, whatever the answers' pace."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one(n: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            started = time.perf_counter()
            async with s.post(path(n), json={}, headers=headers) as r:
                await r.read()
            latencies.append(time.perf_counter() - started)
            statuses[r.status] += 1

        await open_loop(total, rate, one)
    return dict(statuses), latencies


def run_alarms(args: argparse.Namespace, env: dict[str, str], webs: tuple[Stack, Stack],
               database: peewee.Database, meter: Meter, likers: list[str]) -> bool:
    """Phase 3; True if every alarm arrived exactly once."""
    total = int(args.rate * args.paced_seconds)
    print(f"\n== alarms: {args.streams:,} streams on web A, {total:,} likes through web B "
          f"at {args.rate:.0f}/s for {args.paced_seconds:.0f}s ==")
    if math.lcm(len(likers), args.streams) < total:
        print("  (note: some liker/post pairs repeat: those likes fail ALREADY_LIKED)")
    authors = insert_users(database, "alarmed_", args.streams, 0)
    posts = insert_posts(database, authors, len(authors))
    tokens = mint_tokens(env, authors)
    out: multiprocessing.Queue = multiprocessing.Queue()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    reader = multiprocessing.Process(target=subscribe, daemon=True,
                                     args=(webs[0].api.base, tokens, out, ready, stop))
    t = time.perf_counter()
    reader.start()
    try:
        if not ready.wait(120):
            raise SystemExit("the alarm streams did not open within 120 s")
        print(f"streams opened in {time.perf_counter() - t:.1f}s; load {load()}; "
              f"{pg_connections(database)}")
        since = utcnow()
        meter.start()
        statuses, door = asyncio.run(paced(webs[1].api.base, likers,
                                           lambda n: f"{API}/posts/{posts[n % len(posts)]}/likes",
                                           args.rate, total))
        wait_terminal(database, scalar(database, "SELECT count(*) FROM jobs"))
        time.sleep(1)  # let the last alarms reach their streams
        cpu_line = meter.line()
        stop.set()
        seen_by, failed = out.get(timeout=60)
        reader.join(30)
    finally:
        if reader.is_alive():
            reader.terminate()
    with database.connection_context():
        expected = {(user, number): (stamp(created), stamp(finished)) for
                    user, number, created, finished in database.execute_sql(
            "SELECT a.user_id, a.number, j.created_at, j.finished_at FROM alarms a "
            "JOIN jobs j ON j.type = 'sns.like' AND j.status = 'succeeded' AND j.created_at >= %s"
            " AND j.user_id = a.from_user_id"
            " AND (j.payload::json ->> 'post_id')::bigint = a.post_id "
            "WHERE a.user_id = ANY(%s)", (since, authors)).fetchall()}
        outcomes = dict(database.execute_sql(
            "SELECT status, count(*) FROM jobs WHERE type = 'sns.like' AND created_at >= %s "
            "GROUP BY status", (since,)).fetchall())
    delivered: Counter[tuple[int, int]] = Counter()
    latencies, malformed = [], 0
    for author, seen in zip(authors, seen_by, strict=True):
        for number, name, data, received in seen:
            key = (author, number)
            delivered[key] += 1
            body = msgspec.json.decode(data) if data.startswith("{") else {}
            if name != "alarm" or body.get("id") != number or "created_at" not in body:
                malformed += 1
            if key in expected and delivered[key] == 1:
                latencies.append(max(received - expected[key][1], 0.0))
    once = sum(delivered[k] == 1 for k in expected)
    missing = sum(k not in delivered for k in expected)
    twice = sum(c > 1 for k, c in delivered.items() if k in expected)
    unexpected = sum(c for k, c in delivered.items() if k not in expected)
    print(f"likes: {total:,} sent (statuses {statuses}); jobs {outcomes}; "
          f"streams that did not open: {failed or 'none'}")
    print("  " + latency_line("door (202, web B)", door))
    if expected:
        print("  " + latency_line("202 recorded -> commit (jobs' created_at -> finished_at)",
                                  [f - c for c, f in expected.values()]))
    if latencies:
        s = sorted(latencies)
        print("  " + latency_line("alarm commit -> delivery at the subscriber", s) +
              f" -- DESIGN p99 <= 100 ms: {'met' if percentile(s, 99) <= 0.1 else 'MISSED'}")
    print(f"  alarms: {len(expected):,} expected, {once:,} delivered exactly once, "
          f"{missing} missing, {twice} more than once, {unexpected} unexpected, "
          f"{malformed} malformed")
    print("  " + cpu_line)
    ok = (0 < once == len(expected) == outcomes.get("succeeded", 0) and not unexpected
          and not failed and not malformed)
    print(f"alarm delivery: {'PASS' if ok else 'FAIL'}")
    return ok


# -- the builds ------------------------------------------------------------------------


@dataclass
class Workload:
    """Who likes and comments on what."""

    tokens: list[str]
    hot: list[int]  # the one hot post
    spread: list[int]
    hot_author: int
    spread_authors: list[int]


def phases(work: Workload) -> list[tuple[str, str, str, list[int]]]:
    """``(name, job type, path suffix, posts)`` of the closed-loop phases, in order."""
    return [("hot like", "sns.like", "likes", work.hot),
            ("hot comment", "sns.comment", "comments", work.hot),
            ("spread like", "sns.like", "likes", work.spread),
            ("spread comment", "sns.comment", "comments", work.spread)]


def body(suffix: str) -> Callable[[int], dict]:
    """The request body of the n-th like or comment."""
    if suffix == "likes":
        return lambda n: {}
    return lambda n: {"comment": f"bench comment {n}"}


def run_bazaar(args: argparse.Namespace, env: dict[str, str], database: peewee.Database,
               work: Workload) -> tuple[dict[str, Phase], bool]:
    """Phases 1-3 on the Bazaar processes."""
    first, second = Stack(env), Stack(env)
    results: dict[str, Phase] = {}
    try:
        first.start_web()
        second.start_web()
        first.start_worker(processes=args.worker_processes, threads=args.worker_threads)
        print(f"\n== Bazaar: 2 web processes (the closed loops go to web A), "
              f"{args.worker_processes} worker processes x {args.worker_threads} threads; "
              f"workers polling after {wait_for_workers(env, args.worker_processes):.1f}s ==")
        meter = Meter({"web A": first.procs["web"].pid, "web B": second.procs["web"].pid,
                       "workers": first.procs["worker"].pid},
                      env["DATABASE_URL"].rsplit("/", 1)[1])
        for name, job_type, suffix, posts in phases(work):
            time.sleep(args.settle)
            since = utcnow()
            phase = run_loop(name, first.api.base, work.tokens, args.users, args.connections,
                             lambda n, p=posts, s=suffix: f"{API}/posts/{p[n % len(p)]}/{s}",
                             body(suffix), meter)
            finish_bazaar(phase, database, meter, job_type, since)
            phase.report("Bazaar", ("web A",))
            results[name] = phase
        ok = print_checks(
            count_checks(database, work.hot, args.users, args.users)
            + count_checks(database, work.spread, args.users, args.users)
            + alarm_checks(database, work, args.users))
        time.sleep(args.settle)
        ok = run_alarms(args, env, (first, second), database, meter, work.tokens) and ok
    finally:
        second.stop()
        first.stop()
    return results, ok


def alarm_checks(database: peewee.Database, work: Workload,
                 users: int) -> list[tuple[bool, str]]:
    """Every like and comment on another's post wrote one alarm for its author."""
    hot = scalar(database, "SELECT count(*) FROM alarms WHERE user_id = %s", (work.hot_author,))
    spread = scalar(database, "SELECT count(*) FROM alarms WHERE user_id = ANY(%s)",
                    (work.spread_authors,))
    return [(hot == 2 * users, f"hot author's alarms {hot} == {2 * users} likes + comments"),
            (spread == 2 * users,
             f"spread authors' alarms {spread} == {2 * users} likes + comments")]



def run_plain(args: argparse.Namespace, env: dict[str, str], database: peewee.Database,
              work: Workload) -> tuple[dict[str, Phase], bool]:
    """Phases 1 and 2 on the plain reference (its own posts)."""
    prefix = f"{env['REDIS_PREFIX']}-plain"  # under the scratch prefix: dropped with it
    plain_env = {**env, "REDIS_PREFIX": prefix, "PLAIN_NAMESPACE": f"{prefix}:dramatiq"}
    stack = PlainStack(plain_env, module="bench.plain_like")
    results: dict[str, Phase] = {}
    try:
        stack.start_web()
        stack.start_worker(processes=args.worker_processes, threads=args.worker_threads)
        print(f"\n== plain: 1 web process, {args.worker_processes} worker processes x "
              f"{args.worker_threads} threads; workers polling after "
              f"{wait_for_workers(plain_env, args.worker_processes):.1f}s ==")
        meter = Meter({"web": stack.procs["web"].pid, "workers": stack.procs["worker"].pid},
                      env["DATABASE_URL"].rsplit("/", 1)[1])
        for name, _, suffix, posts in phases(work):
            time.sleep(args.settle)
            phase = run_loop(name, stack.api.base, work.tokens, args.users, args.connections,
                             lambda n, p=posts, s=suffix: f"{API}/posts/{p[n % len(p)]}/{s}",
                             body(suffix), meter)
            table = "post_likes" if suffix == "likes" else "post_comments"
            finish_plain(phase, database, meter, table, posts)
            phase.report("plain", ("web",))
            results[name] = phase
        ok = print_checks(count_checks(database, work.hot, args.users, args.users)
                          + count_checks(database, work.spread, args.users, args.users))
    finally:
        stack.stop()
    return results, ok


def summary(bazaar: dict[str, Phase], plain: dict[str, Phase]) -> None:
    """Every figure next to the plain one, with the ratio."""
    print("\n== summary: Bazaar vs plain, same run ==")
    print(f"{'figure':<40}{'Bazaar':>12}{'plain':>12}{'Bazaar/plain':>14}")

    def row(label: str, mine: float, theirs: float, fmt: str = "{:,.0f}") -> None:
        ratio = mine / theirs if theirs else math.nan
        print(f"{label:<40}{fmt.format(mine):>12}{fmt.format(theirs):>12}{ratio:>14.2f}")

    for name, mine in bazaar.items():
        theirs = plain[name]
        row(f"{name}: accepted/s", mine.accepted, theirs.accepted)
        row(f"{name}: completed/s (end to end)", mine.completed, theirs.completed)
        row(f"{name}: door p99 (ms)", 1000 * percentile(sorted(mine.latencies), 99),
            1000 * percentile(sorted(theirs.latencies), 99), "{:.1f}")
        row(f"{name}: web cpu/command (ms)", 1000 * mine.cpu["web A"] / mine.sent,
            1000 * theirs.cpu["web"] / theirs.sent, "{:.2f}")
        row(f"{name}: worker cpu/command (ms)", 1000 * mine.cpu["workers"] / mine.sent,
            1000 * theirs.cpu["workers"] / theirs.sent, "{:.2f}")
        row(f"{name}: postgres cpu/command (ms)", 1000 * mine.cpu["postgres"] / mine.sent,
            1000 * theirs.cpu["postgres"] / theirs.sent, "{:.2f}")


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a small run (300 users, 50 posts by 10 authors, 200 streams, 3 s)")
    p.add_argument("--users", type=int, default=None, help="likes (and comments) per phase")
    p.add_argument("--posts", type=int, default=None, help="spread: posts")
    p.add_argument("--authors", type=int, default=None, help="spread: their authors")
    p.add_argument("--streams", type=int, default=None, help="alarms: SSE streams (authors)")
    p.add_argument("--rate", type=float, default=100, help="alarms: likes per second")
    p.add_argument("--paced-seconds", type=float, default=None, help="alarms: duration")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--worker-processes", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=8)
    p.add_argument("--db-pool", type=int, default=16, help="DB_POOL_SIZE of each process")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of rest between phases")
    p.add_argument("--skip-plain", action="store_true", help="no reference build")
    args = p.parse_args()
    sizes = ((300, 50, 10, 200, 3) if args.quick else (2_000, 500, 100, 1_000, 5))
    for name, value in zip(("users", "posts", "authors", "streams", "paced_seconds"), sizes,
                           strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main() -> None:
    """Run every phase on both builds and print the figures; exit 1 if a check fails."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a plain kill too
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    print(f"load: {args.users:,} users, each one like and one comment per phase, over "
          f"{args.connections} connections; spread over {args.posts} posts by {args.authors} "
          f"authors; {args.streams:,} alarm streams; load {load()}")
    with scratch_env(DB_POOL_SIZE=str(args.db_pool)) as env:
        database = connect_database(env["DATABASE_URL"], 4)
        try:
            t = time.perf_counter()
            likers = insert_users(database, "liker_", args.users, 0)
            [hot_author] = insert_users(database, "hot_author_", 1, 0)
            authors = insert_users(database, "author_", args.authors, 0)
            work = Workload(mint_tokens(env, likers), [], [], hot_author, authors)
            work.hot = insert_posts(database, [hot_author], 1)
            work.spread = insert_posts(database, authors, args.posts)
            print(f"set-up: {args.users + 1 + args.authors:,} users, {args.posts + 1} posts "
                  f"and {args.users:,} tokens in {time.perf_counter() - t:.1f}s; "
                  f"{pg_connections(database)}")
            need = 2 * args.db_pool + args.worker_processes * (args.worker_threads + 1) + 4
            if (free := connections_free(database)) < need:
                print(f"WARNING: {free} PostgreSQL connections free, this run may open {need}: "
                      "expect 'too many clients' (503s, retried or stuck jobs)")
            bazaar, ok = run_bazaar(args, env, database, work)
            if not args.skip_plain:
                work.hot = insert_posts(database, [hot_author], 1)
                work.spread = insert_posts(database, authors, args.posts)
                plain, plain_ok = run_plain(args, env, database, work)
                ok = ok and plain_ok
                summary(bazaar, plain)
        finally:
            database.close_all()
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
