"""Two builds of the web process side by side on one stack: this tree and another revision.

Checks ``--base`` (a git revision, ``HEAD`` by default) out into a temporary worktree,
starts its web process and this tree's on one scratch database and Redis (no workers),
queues ``--users`` users for one concert, then alternates the two builds under wrk (64
connections, ``--seconds`` a round, the order swapped every round) on the waiting room's
position poll and token issue. Prints each round's rate, p99 and web CPU a request, then
the medians and this tree's over the base's.

On a machine whose speed drifts by half within the hour, short alternating rounds are
what lets a change of a tenth show (the drain's counterpart is ``bench.drain_cpu
--pairs``). Both revisions must share the database schema.

Usage: ``python -m bench.web_pairs [--base REV] [--rounds N] [--seconds S] [--users N]``
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from bench.charge import session_cpu
from bench.common import machine, run_wrk, scratch_env, wrk_p99_ms, wrk_rate
from bench.queue import DAY, fill_room, lua_requests, make_users, poll_headers
from db.connection import connect_database
from jobs import concerts
from jobs.clock import utcnow
from tests.support import ROOT, Stack
from web.auth import Tokens

CONNECTIONS = 64


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="bazaar-base-") as parent:
        path = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(path), revision], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(path)], check=False)


def runs_from(tree: Path) -> Path:
    """Where a process started in ``tree`` imports the web package from."""
    out = subprocess.run([sys.executable, "-c", "import web; print(web.__file__)"],
                         cwd=tree, capture_output=True, text=True, check=True).stdout
    return Path(out.strip()).resolve().parent.parent


def summary(label: str, rounds: list[tuple[float, float, float]]) -> str:
    """A build's rounds, then their medians: rate, p99, CPU a request."""
    rates, p99s, cpus = zip(*rounds, strict=True)
    return (f"  {label:5s} rates {' '.join(f'{r:,.0f}' for r in rates)}; "
            f"median {statistics.median(rates):,.0f}/s, p99 {statistics.median(p99s):.2f} ms, "
            f"web CPU {statistics.median(cpus):.1f} us a request")


def ratios(base: list[tuple[float, float, float]], this: list[tuple[float, float, float]]) -> str:
    """This tree's medians over the base's: rate, p99, CPU a request."""
    over = [statistics.median(t[i] for t in this) / statistics.median(b[i] for b in base)
            for i in range(3)]
    return f"  this / base: rate {over[0]:.3f}, p99 {over[1]:.3f}, CPU a request {over[2]:.3f}"


def main() -> None:
    """Run the pairs and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with worktree(args.base) as tree, scratch_env(QUEUE_ACTIVE_LIMIT="100") as env:
        if runs_from(tree) != tree.resolve():
            raise SystemExit(f"a process started in {tree} would not run its code")
        database = connect_database(env["DATABASE_URL"], 4)
        builds = {"base": Stack(env, root=tree), "this": Stack(env)}
        try:
            ids = make_users(database, args.users)
            with database.connection_context():
                cid = concerts.create_concert("pairs", [(DAY, 0)], utcnow())["id"]
            client = redis.Redis.from_url(env["REDIS_URL"])
            tokens = Tokens(env["JWT_SECRET"], 7200, 7200, client, env["REDIS_PREFIX"])
            bearer = {uid: tokens.issue(uid)["access_token"] for uid in ids}
            for stack in builds.values():
                stack.start_web()
            fill_room(client, env["REDIS_PREFIX"], cid, ids, tokens)
            sample = random.Random(1).sample(ids, min(5000, len(ids)))
            routes = {
                "position poll": lua_requests("GET", "/api/v1/queue/tokens/me", poll_headers(
                    client, env["REDIS_PREFIX"], cid, sample, bearer)),
                "token issue": lua_requests(
                    "POST", "/api/v1/queue/tokens",
                    [{"Authorization": f"Bearer {bearer[u]}"} for u in sample],
                    f'{{"concert_id":{cid}}}'),
            }
            print(f"base {args.base} ({tree}) against this tree; {len(ids):,} queued; "
                  f"{CONNECTIONS} connections, {args.rounds} rounds of {args.seconds} s")
            for route, lua in routes.items():
                for stack in builds.values():  # (warm each: caches, connections)
                    run_wrk(stack.api.base, lua, 1, CONNECTIONS)
                figures: dict[str, list[tuple[float, float, float]]] = {"base": [], "this": []}
                for n in range(args.rounds):
                    for name in ("base", "this") if n % 2 == 0 else ("this", "base"):
                        web = builds[name].procs["web"].pid  # (a session of its own)
                        before = session_cpu(web)
                        out = run_wrk(builds[name].api.base, lua, args.seconds, CONNECTIONS)
                        rate = wrk_rate(out)
                        cpu = (session_cpu(web) - before) / (rate * args.seconds) * 1e6
                        figures[name].append((rate, wrk_p99_ms(out), cpu))
                print(f"{route}:")
                print(summary("base", figures["base"]))
                print(summary("this", figures["this"]))
                print(ratios(figures["base"], figures["this"]))
        finally:
            for stack in builds.values():
                stack.stop()
            database.close_all()


if __name__ == "__main__":
    main()
