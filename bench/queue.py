"""Waiting-room and ticket-open load generator.

Starts its own web process and workers on a scratch database, then:

1. fill: 100,000 users take a queue token for one concert (the room's active limit is
   100, so 99,900 wait). The first ``--http-joins`` go through ``POST /queue/tokens``,
   timed with wrk; the rest are joined straight in Redis, to keep the run short.
2. poll: waiting users poll ``GET /queue/tokens/me`` (wrk, rotating credentials);
   prints requests/s and latency percentiles at 4, 16 and 64 connections.
3. ticket open: ``--racers`` active users each try to hold a random one of the 50 seats
   of a date at once; prints the time until every job is terminal, jobs/s, and checks
   that no seat has two holders.
4. the plain reference (``bench/plain_queue.py``: the same scripts behind a bare
   aiohttp handler, pyjwt on every request, one redis-py call per request), on the same
   Redis under a prefix of its own: token issue and position poll at 64 connections,
   with the same users, then both builds side by side.

Just before each timed phase at 64 connections, ``bench.bare`` (aiohttp answering a
constant, a process of its own) is measured for 5 s: the machine's speed at that moment
against DESIGN.md's reference machine (21,800 a second). The summary judges each p99 by
DESIGN.md's 10 ms scaled by that speed (``bench.common.Speed``), and prints the unscaled
verdict beside it.

``--webs 2`` runs two web processes on the port (``SO_REUSEPORT``, as the Procfile allows),
for Bazaar and for plain alike.

Usage: ``python -m bench.queue [--tokens N] [--http-joins N] [--seconds S] [--webs N]
[--skip-plain]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from datetime import date

import redis

from bench.common import (
    BareAiohttp,
    PlainStack,
    Speed,
    machine,
    more_webs,
    run_wrk,
    scratch_env,
    wrk_p99_ms,
    wrk_percentiles,
    wrk_rate,
)
from db.connection import connect_database
from db.models import PointWallet, Reservation, User
from jobs import concerts
from jobs.clock import utcnow
from tests.loadclient import post_many
from tests.support import Stack
from web.auth import Tokens
from workers.waiting_room import WaitingRoom

DAY = date(2027, 6, 1)


def make_users(database, count: int) -> list[int]:
    """``count`` users inserted in bulk; their ids."""
    now = utcnow()
    with database.connection_context(), database.atomic():
        for start in range(0, count, 5000):
            User.insert_many([{"username": f"q{n}", "password_hash": "x", "created_at": now}
                              for n in range(start, min(count, start + 5000))]).execute()
        ids = [u for (u,) in User.select(User.id).order_by(User.id).tuples()]
        for start in range(0, count, 5000):
            PointWallet.insert_many([{"user": uid, "balance": 0, "updated_at": now}
                                     for uid in ids[start:start + 5000]]).execute()
    return ids


def summary(out: str) -> str:
    """requests/s, non-2xx count and latency percentiles from wrk's output."""
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = wrk_percentiles(out)
    return (f"{wrk_rate(out):,.0f} req/s, p50={pct.get('50')} p90={pct.get('90')} "
            f"p99={pct.get('99')}, non-2xx={errors.group(1) if errors else 0}")


def lua_requests(method: str, path: str, headers: list[dict[str, str]], body: str = "") -> str:
    """A wrk script cycling through one header set per request."""
    rows = ",\n".join("{" + ", ".join(f'["{k}"]="{v}"' for k, v in h.items()) + "}"
                      for h in headers)
    return f"""
local sets = {{{rows}}}
local n = 0
request = function()
  n = n + 1
  local h = sets[(n % #sets) + 1]
  h["Content-Type"] = "application/json"
  return wrk.format("{method}", "{path}", h, '{body}')
end
"""


def fill_room(client: redis.Redis, prefix: str, cid: int, ids: list[int], tokens: Tokens) -> int:
    """Join ``ids`` to concert ``cid``'s line under ``prefix`` straight in Redis; the
    number now waiting."""
    room = WaitingRoom(client, prefix, 100, 600, 3600)
    for start in range(0, len(ids), 2000):  # (2,000 joins a script call)
        room.joins(cid, [(uid, tokens.issue_queue_token(uid, cid, 7200), utcnow())
                         for uid in ids[start:start + 2000]])
    return client.zcard(room.keys(cid)[0])


def poll_headers(client: redis.Redis, prefix: str, cid: int, sample: list[int],
                 bearer: dict[int, str]) -> list[dict[str, str]]:
    """Each sampled user's ``Authorization`` and the ``Queue-Token`` they hold."""
    held = client.hgetall(WaitingRoom(client, prefix, 100, 600, 3600).keys(cid)[3])
    return [{"Authorization": f"Bearer {bearer[u]}",
             "Queue-Token": held[str(u).encode()].decode()} for u in sample]


def main() -> None:
    """Run the phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--http-joins", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--racers", type=int, default=500)
    parser.add_argument("--webs", type=int, default=1, help="web processes, each build")
    parser.add_argument("--skip-plain", action="store_true", help="no plain reference")
    args = parser.parse_args()
    figures: dict[str, dict[str, str]] = {"bazaar": {}, "plain": {}}
    speeds: dict[str, Speed] = {}
    print(f"machine: {machine()}")
    with scratch_env(QUEUE_ACTIVE_LIMIT="100") as env:
        database = connect_database(env["DATABASE_URL"], 4)
        stack = Stack(env)
        bare = BareAiohttp(env)
        try:
            ids = make_users(database, args.tokens + args.racers)
            with database.connection_context():
                cid = concerts.create_concert("bench", [(DAY, 0)], utcnow())["id"]
                racers_cid = concerts.create_concert("open", [(DAY, 0)], utcnow())["id"]
            client = redis.Redis.from_url(env["REDIS_URL"])
            tokens = Tokens(env["JWT_SECRET"], 7200, 7200, client, env["REDIS_PREFIX"])
            bearer = {uid: tokens.issue(uid)["access_token"] for uid in ids}
            stack.start_web()
            more_webs(stack, [sys.executable, "-m", "web.cli", "web"], args.webs - 1)
            stack.start_worker(processes=2, threads=8)
            print(f"processes: {args.webs} web, 2 worker processes x 8 threads; wrk 1 thread; "
                  f"{args.tokens:,} tokens")

            joiners = ids[:args.http_joins]
            for connections in (16, 64):  # (a user already in line gets its token again)
                if connections == 64:
                    speeds["issue"] = measured(bare)
                out = run_wrk(stack.api.base, lua_requests(
                    "POST", "/api/v1/queue/tokens",
                    [{"Authorization": f"Bearer {bearer[u]}"} for u in joiners],
                    f'{{"concert_id":{cid}}}'), args.seconds, connections)
                print(f"token issue over HTTP ({connections} connections, {args.seconds}s): "
                      f"{summary(out)}")
            figures["bazaar"]["issue"] = out

            room = WaitingRoom(client, env["REDIS_PREFIX"], 100, 600, 3600)
            began = time.perf_counter()
            size = fill_room(client, env["REDIS_PREFIX"], cid, ids[:args.tokens], tokens)
            print(f"fill: {size:,} waiting, {client.zcard(room.keys(cid)[1])} active "
                  f"(direct joins took {time.perf_counter() - began:.1f}s)")

            sample = random.Random(1).sample(ids[:args.tokens], min(5000, args.tokens))
            polls = poll_headers(client, env["REDIS_PREFIX"], cid, sample, bearer)
            for connections in (4, 16, 64):
                if connections == 64:
                    speeds["poll"] = measured(bare)
                out = run_wrk(stack.api.base, lua_requests("GET", "/api/v1/queue/tokens/me",
                                                           polls), args.seconds, connections)
                print(f"position poll ({connections} connections): {summary(out)}")
            figures["bazaar"]["poll"] = out

            racers = ids[args.tokens:]
            racer_room = WaitingRoom(client, env["REDIS_PREFIX"], 10**6, 600, 3600)
            qtokens = {}
            for uid in racers:
                qtokens[uid] = tokens.issue_queue_token(uid, racers_cid, 7200)
                racer_room.join(racers_cid, uid, qtokens[uid], utcnow())
            rng = random.Random(2)
            requests = [("/reservations", {"concert_id": racers_cid, "date": DAY.isoformat(),
                                           "seat_no": rng.randint(1, 50)},
                         {"Authorization": f"Bearer {bearer[u]}", "Queue-Token": qtokens[u]})
                        for u in racers]
            with database.connection_context():
                before = database.execute_sql("SELECT count(*) FROM jobs").fetchone()[0]
            began = time.perf_counter()
            replies = asyncio.run(post_many(stack.api.base, requests, concurrency=200))
            while True:
                with database.connection_context():
                    done = database.execute_sql(
                        "SELECT count(*) FROM jobs WHERE type = 'concert.reserve' AND status IN "
                        "('succeeded', 'failed')").fetchone()[0]
                if done >= len(replies) or time.perf_counter() - began > 120:
                    break
                time.sleep(0.05)
            took = time.perf_counter() - began
            with database.connection_context():
                seats = [r.seat_no for r in Reservation.select()]
            ok = len(seats) == len(set(seats)) <= 50
            print(f"ticket open: {len(racers)} active users, 50 seats: all {done} jobs terminal "
                  f"in {took:.2f}s = {done / took:,.0f} jobs/s; {len(seats)} seats held, "
                  f"no seat twice: {'PASS' if ok else 'FAIL'} (jobs before: {before})")
            stack.stop()
            if not args.skip_plain:
                run_plain(args, env, client, tokens, bearer, joiners, sample, cid, ids, figures)
        finally:
            stack.stop()
            bare.stop()
            database.close_all()
        compare(figures, speeds)


def measured(bare: BareAiohttp) -> Speed:
    """The machine's speed now, printed."""
    speed = bare.measure()
    print(f"  the machine now: {speed}")
    return speed


def run_plain(args: argparse.Namespace, env: dict[str, str], client: redis.Redis,
              tokens: Tokens, bearer: dict[int, str], joiners: list[int], sample: list[int],
              cid: int, ids: list[int], figures: dict[str, dict[str, str]]) -> None:
    """Token issue and position poll at 64 connections on the plain reference."""
    prefix = f"{env['REDIS_PREFIX']}-plain"
    plain = PlainStack({**env, "PLAIN_PREFIX": prefix}, module="bench.plain_queue")
    try:
        plain.start_web()
        print("\n== plain (bench/plain_queue.py), same users and tokens ==")
        more_webs(plain, [sys.executable, "-m", "bench.plain_queue", "web"], args.webs - 1)
        print(f"web processes: {args.webs}")
        out = run_wrk(plain.api.base, lua_requests(
            "POST", "/api/v1/queue/tokens",
            [{"Authorization": f"Bearer {bearer[u]}"} for u in joiners],
            f'{{"concert_id":{cid}}}'), args.seconds, 64)
        print(f"token issue over HTTP (64 connections, {args.seconds}s): {summary(out)}")
        figures["plain"]["issue"] = out
        size = fill_room(client, prefix, cid, ids[:args.tokens], tokens)
        print(f"fill: {size:,} waiting")
        out = run_wrk(plain.api.base, lua_requests(
            "GET", "/api/v1/queue/tokens/me", poll_headers(client, prefix, cid, sample, bearer)),
            args.seconds, 64)
        print(f"position poll (64 connections): {summary(out)}")
        figures["plain"]["poll"] = out
    finally:
        plain.stop()
        keys = client.keys(f"{prefix}:*")
        if keys:
            client.delete(*keys)


PHASES = (("issue", "token issue"), ("poll", "position poll"))
TARGET_MS = 10.0  # DESIGN.md: token issue and position poll p99 at 64 connections


def compare(figures: dict[str, dict[str, str]], speeds: dict[str, Speed]) -> None:
    """Both builds side by side at 64 connections (plain's cells empty without it), and
    each p99 against DESIGN.md's 10 ms scaled by the machine's speed before its phase."""
    print("\n== summary: Bazaar vs plain, same run, 64 connections ==")
    print(f"{'figure':<28}{'Bazaar':>12}{'plain':>12}{'Bazaar/plain':>14}  target")

    def row(label: str, mine: float, theirs: float | None, fmt: str, target: str) -> None:
        other, ratio = ("-", "-") if theirs is None else (fmt.format(theirs),
                                                          f"{mine / theirs:.2f}")
        print(f"{label:<28}{fmt.format(mine):>12}{other:>12}{ratio:>14}  {target}")

    for phase, name in PHASES:
        ours, theirs, speed = figures["bazaar"][phase], figures["plain"].get(phase), speeds[phase]
        rate, p99 = wrk_rate(ours), wrk_p99_ms(ours)
        row(f"{name} (req/s)", rate, theirs and wrk_rate(theirs), "{:,.0f}",
            f"({rate / speed.bare:.2f} of bare aiohttp)")
        row(f"{name} p99 (ms)", p99, theirs and wrk_p99_ms(theirs), "{:.2f}",
            speed.verdict(p99, TARGET_MS, "ms"))
    print("(each line: 10 ms x the reference machine's bare aiohttp rate over this machine's, "
          "measured just before the phase)")


if __name__ == "__main__":
    main()
