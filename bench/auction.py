"""Load generator for the auction: many bidders on one artwork, many live subscribers.

Starts 2 web processes and a worker pool on a scratch database, lists one artwork, and
connects ``--subscribers`` SSE clients to ``/artworks/{id}/events`` (half on each web
process, read by two subscriber processes of their own). Then ``--bidders`` users send
``--bids`` bids over ``--connections`` connections, each bid a little above the last
one sent, so most are accepted and some lose the race (``BID_TOO_LOW``).

Prints bids/s accepted at the door and completed by the workers, and the delay from a
bid's commit to its event at every subscriber (p50/p95/p99/max). The commit time of
version k is the ``finished_at`` of the k-th succeeded bid: versions are given out under
the artwork's row lock, in commit order, and ``finished_at`` is written in the same
transaction just before the commit. All clocks are this machine's.

Usage: ``python -m bench.auction [--bidders 200] [--bids 3000] [--subscribers 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from datetime import UTC, timedelta

import aiohttp

from bench.charge import closed_loop
from bench.common import latency_line, machine, open_loop, scratch_env
from bench.shop import CpuMeter, insert_users, mint_tokens, wait_terminal
from db.connection import connect_database
from db.models import Job, User
from jobs import auction
from jobs.clock import utcnow
from tests.support import Stack

API = "/api/v1"
START = 1_000


def subscribe(base: str, path: str, count: int, out: multiprocessing.Queue,
              ready: multiprocessing.Event) -> None:
    """A process of ``count`` SSE clients, reading until the server ends the streams;
    puts ``[[(version, received_at), ...], ...]``, one list per client."""

    async def one(s: aiohttp.ClientSession, connected: list) -> list[tuple[int, float]]:
        seen: list[tuple[int, float]] = []
        try:
            async with s.get(path, timeout=aiohttp.ClientTimeout(total=None)) as r:
                connected.append(1)
                version = None
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id:"):
                        version = int(line[3:])
                    elif line == "" and version is not None:
                        seen.append((version, time.time()))
                        version = None
        except aiohttp.ClientError:
            pass  # the web process went away: the stream is over
        return seen

    async def run() -> None:
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as s:
            connected: list = []
            tasks = [asyncio.create_task(one(s, connected)) for _ in range(count)]
            while len(connected) < count:
                await asyncio.sleep(0.05)
            ready.set()
            out.put(list(await asyncio.gather(*tasks)))

    asyncio.run(run())


async def paced_bids(base: str, path: str, tokens: list[str], rate: float, seconds: float,
                     floor: int) -> int:
    """Open loop: one bid every ``1/rate`` s, each 5.5 % above the one before (above the
    5 % increment, so in-order bids are accepted); the bids sent."""
    total = int(rate * seconds)
    async with aiohttp.ClientSession(base) as s:

        async def one(n: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            async with s.post(path, json={"amount": int(floor * 1.055**n)}, headers=headers) as r:
                await r.read()

        await open_loop(total, rate, one)
    return total


def main() -> None:
    """Run the auction load once and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bidders", type=int, default=200)
    p.add_argument("--bids", type=int, default=3_000)
    p.add_argument("--subscribers", type=int, default=1_000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--worker-processes", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=8)
    p.add_argument("--rate", type=float, default=20, help="paced phase: bids per second")
    p.add_argument("--paced-seconds", type=float, default=5)
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"processes: 2 web; {args.worker_processes} worker processes x "
          f"{args.worker_threads} threads; {args.bidders} bidders, {args.bids} bids over "
          f"{args.connections} connections; {args.subscribers} subscribers in 2 processes")
    with scratch_env(DB_POOL_SIZE="16") as env:
        first, second = Stack(env), Stack(env)
        database = connect_database(env["DATABASE_URL"], 4)
        try:
            first.start_web()
            second.start_web()
            first.start_worker(processes=args.worker_processes, threads=args.worker_threads)
            run(args, env, (first, second), database)
        finally:
            second.stop()
            first.stop()
            database.close_all()


def run(args: argparse.Namespace, env: dict[str, str], webs: tuple[Stack, Stack],
        database) -> None:
    """Set up, subscribe, bid, and report."""
    bidders = insert_users(database, "bidder", args.bidders, 10_000_000)
    [artist] = insert_users(database, "artist", 1, 0)
    with database.connection_context():
        User.update(is_artist=True).where(User.id == artist).execute()
        now = utcnow()
        art = auction.create_artwork(artist, "Bench", "PAINTING", None, START, None,
                                     now + timedelta(days=1), now)["id"]
    tokens = mint_tokens(env, bidders)
    out: multiprocessing.Queue = multiprocessing.Queue()
    readers = []
    for web in webs:
        ready = multiprocessing.Event()
        proc = multiprocessing.Process(target=subscribe, args=(
            web.api.base, f"{API}/artworks/{art}/events", args.subscribers // 2, out, ready))
        proc.start()
        readers.append(proc)
        if not ready.wait(120):
            raise SystemExit("the subscribers did not connect")
    meter = CpuMeter({"web A": webs[0].procs["web"].pid, "web B": webs[1].procs["web"].pid,
                      "workers": webs[0].procs["worker"].pid},
                     env["DATABASE_URL"].rsplit("/", 1)[1])
    meter.start()
    seconds, latencies, statuses = asyncio.run(closed_loop(
        webs[0].api.base, tokens, args.bids, args.connections, f"{API}/artworks/{art}/bids",
        lambda n: {"amount": START + 10 * n}))  # each a little above the last one sent
    sent_at = time.perf_counter()
    drained = wait_terminal(database, args.bids) - sent_at
    time.sleep(1)  # let the last events reach every subscriber
    cpu = meter.line()
    with database.connection_context():
        burst = Job.select().where((Job.type == "auction.bid")
                                   & (Job.status == "succeeded")).count()
    meter.start()
    paced = asyncio.run(paced_bids(webs[0].api.base, f"{API}/artworks/{art}/bids", tokens,
                                   args.rate, args.paced_seconds, START + 20 * args.bids))
    wait_terminal(database, args.bids + paced)
    time.sleep(1)
    paced_cpu = meter.line()
    with database.connection_context():
        won = list(Job.select(Job.created_at, Job.finished_at)
                   .where((Job.type == "auction.bid") & (Job.status == "succeeded"))
                   .order_by(Job.finished_at).tuples())
    commits = [f.replace(tzinfo=UTC).timestamp() for _, f in won]
    for web in webs:  # ending the web processes ends the streams; the readers report
        web.kill("web", 15)
    seen_by = [seen for _ in readers for seen in out.get(timeout=120)]
    for proc in readers:
        proc.join(30)
    final = len(commits)
    print(f"\nburst: {args.bids} bids sent in {seconds:.2f}s = {args.bids / seconds:.0f}/s "
          f"accepted (statuses {statuses}); {burst} succeeded, {args.bids - burst} BID_TOO_LOW")
    print(latency_line("door (202)", latencies))
    print(f"completed: all {args.bids} terminal {drained:.2f}s after the last 202 "
          f"= {args.bids / (seconds + drained):.0f}/s end to end")
    print(latency_line("burst: commit -> event at each subscriber",
                       [max(t - commits[v - 1], 0.0) for seen in seen_by for v, t in seen
                        if v <= burst]))
    print("burst " + cpu)
    print(f"\npaced: {paced} bids at {args.rate:.0f}/s; {final - burst} succeeded")
    print(latency_line("paced: commit -> event at each subscriber",
                       [max(t - commits[v - 1], 0.0) for seen in seen_by for v, t in seen
                        if v > burst]))
    print("paced " + paced_cpu)
    in_order = sum([v for v, _ in seen] == list(range(1, final + 1)) for seen in seen_by)
    print(f"\nsubscribers: {len(seen_by)} reported; {in_order} saw every version 1..{final} "
          f"exactly once and in order")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
