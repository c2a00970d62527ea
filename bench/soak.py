"""A soak under faults: mixed load for minutes while processes and servers are killed.

Starts its own PostgreSQL (``initdb`` into a temporary directory, run as the ``postgres``
user when started as root) and its own Redis (nothing kept on disk) on free ports, runs
the migrations, and starts 2 web processes, 2 worker processes and 2 schedulers. A seed
goes in through the API: an admin's products, coupons and a concert, an artist's
artworks, posts, and users who charge points. Then ``--clients`` users send a mixed load
(charges, orders and their payments, coupon issues, seat holds through the waiting room
and their payments, bids and the odd buy-now, likes, unlikes and comments) to both web
processes, while, one at a time with a recovery gap between them, the soak SIGKILLs and
restarts a worker, a web process, the active scheduler, Redis (a total loss of the broker's
data: the re-send sweep must bring every unfinished job back) and PostgreSQL
(``pg_ctl stop -m immediate``, then crash recovery).

Clients count refused connections and 503s and carry on. Afterwards the soak waits for
every job to finish, runs the invariant checker (``jobs.check``, what ``bazaar check``
runs, plus stock against the seeded amounts), checks that every accepted command was
recorded and is terminal and that no answer was a 5xx other than 503, and prints a
report. Exit status 1 if anything fails. A process that dies by itself is restarted, as a
supervisor would, and reported.

Usage: ``python -m bench.soak [--minutes M] [--clients N]`` (default 5 minutes, 24 clients)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import peewee
import psycopg2
import redis

from bench.common import machine
from db.connection import make_database
from jobs import check, concerts
from tests.support import ROOT, Api, Stack, free_port

API = "/api/v1"
PREFIX = "soak"
FAULTS = ("worker", "web", "scheduler", "redis", "postgres")
BURST = "points.charge (burst)"
STOCK = {"kettle": 40, "mug": 5_000, "pen": 5_000, "lamp": 5_000}
PG_BIN = Path("/usr/lib/postgresql")
UNFINISHED = "SELECT id::text FROM jobs WHERE status NOT IN ('succeeded', 'failed')"


# -- private servers ---------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl), on PATH or in Debian's directory."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(PG_BIN.glob(f"*/bin/{name}"))
        if not versions:
            raise SystemExit(f"soak: no {name} (install the PostgreSQL server)")
        found = str(versions[-1])
    return found


class PrivatePostgres:
    """A PostgreSQL cluster of our own in ``root``, on ``port``; root runs it as postgres."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root / "pg", free_port()
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """The soak's database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/bazaar"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_owner, *argv], check=True, capture_output=True, timeout=120)

    def create(self) -> None:
        """initdb, start, and create the ``bazaar`` database."""
        self.root.mkdir()
        if self.as_owner:  # the server runs as postgres: let it reach its directory
            self.root.parent.chmod(0o755)
            shutil.chown(self.root, "postgres")
        self._run(_pg_tool("initdb"), "-D", str(self.root / "data"), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-instructions")
        self.start()
        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bazaar")
        admin.close()

    def start(self) -> None:
        """Start (after a crash: with crash recovery) and wait until it accepts connections.

        fsync is off: the soak kills processes, never the machine, and the kernel keeps
        what a killed server wrote; synchronous_commit stays on, so a commit that was
        answered survives the crash.
        """
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                   " -c max_connections=100 -c fsync=off")
        self._run(_pg_tool("pg_ctl"), "-D", str(self.root / "data"), "-l",
                  str(self.root / "server.log"), "-o", options, "-w", "start")

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, every connection cut."""
        self._run(_pg_tool("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop for good (quietly, if it is not running)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_pg_tool("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop")


class PrivateRedis:
    """A redis-server of our own that keeps nothing on disk."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The soak's Redis."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start empty and wait until it answers."""
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.root)], stdout=log, stderr=log)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def crash(self) -> None:
        """SIGKILL: every key is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    stop = crash


# -- the Bazaar processes ----------------------------------------------------------------


class Cluster:
    """2 web, 2 worker and 2 scheduler processes, each killed and restarted by its role.

    Workers and schedulers run in the first web's ``Stack``; each start gets a name of
    its own (``worker1.2``), so the log of a killed process is kept.
    """

    ROLES = ("web1", "web2", "worker1", "worker2", "scheduler1", "scheduler2")

    def __init__(self, env: dict[str, str]) -> None:
        self.webs = [Stack(env), Stack(env)]
        self.names: dict[str, str] = {}
        self.starts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.dead: list[str] = []  # role: what happened, for the report

    @property
    def bases(self) -> list[str]:
        """The web processes' base URLs."""
        return [web.api.base for web in self.webs]

    def start(self, role: str) -> None:
        """Start (or start again) one role."""
        self.starts[role] += 1
        if role.startswith("web"):
            self.webs[int(role[-1]) - 1].start_web()
            return
        name = self.names[role] = f"{role}.{self.starts[role]}"
        if role.startswith("worker"):
            self.webs[0].start_worker(name, processes=1, threads=8)
        else:
            self.webs[0].start_scheduler(name)

    def _where(self, role: str) -> tuple[Stack, str]:
        if role.startswith("web"):
            return self.webs[int(role[-1]) - 1], "web"
        return self.webs[0], self.names[role]

    def pid(self, role: str) -> int:
        """The process id of a role."""
        stack, name = self._where(role)
        return stack.procs[name].pid

    def kill(self, role: str) -> None:
        """SIGKILL a role's process group (a worker's children with it)."""
        stack, name = self._where(role)
        stack.kill(name, signal.SIGKILL)
        if role.startswith("web"):  # keep the killed process's log
            log = Path(os.environ["TMPDIR"]) / f"bazaar-web-{stack.port}.log"
            with contextlib.suppress(OSError):
                log.rename(log.with_suffix(f".{self.starts[role]}.log"))

    def signal_workers(self, sig: int) -> None:
        """Signal both worker process groups (SIGSTOP pauses them, SIGCONT resumes)."""
        for role in ("worker1", "worker2"):
            os.killpg(self.pid(role), sig)

    def revive_the_dead(self, began: float) -> None:
        """Restart any process that exited by itself (as a supervisor would), noting it."""
        with self.lock:
            for role in self.ROLES:
                stack, name = self._where(role)
                proc = stack.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    self.dead.append(f"{role} exited by itself with status {proc.returncode} at "
                                     f"{time.monotonic() - began:.1f}s; restarted")
                    stack.procs.pop(name)
                    self.start(role)

    def stop(self) -> None:
        """Stop everything."""
        for web in reversed(self.webs):
            web.stop()


@contextlib.contextmanager
def logs_in(directory: Path) -> Iterator[None]:
    """Stack writes its processes' logs to ``$TMPDIR``: put them in ``directory``."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before


def bazaar(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a ``bazaar`` command; its output."""
    done = subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, input=stdin,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


# -- what the clients saw ----------------------------------------------------------------


@dataclass
class Tally:
    """Every command sent and how it was answered."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> command
    refused_at: list[float] = field(default_factory=list)  # 503s and connection errors
    reads_failed: int = 0
    odd_answers: list[str] = field(default_factory=list)

    def answered(self, command: str, status: int | None, body: Any) -> None:
        """Count one answer (``status`` None: no answer, the connection failed)."""
        self.sent[command] += 1
        if status is None or status == 503:
            self.refused_at.append(time.monotonic())
        if status is None:
            self.answers["connection error"] += 1
        elif status in (200, 202) and isinstance(body, dict) and "id" in body:
            self.answers["accepted"] += 1
            self.accepted[body["id"]] = command
        elif status == 503:
            self.answers["503 UNAVAILABLE"] += 1
        else:
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            self.answers[f"{status} {code or '-'}"] += 1


@dataclass
class World:
    """What the seed made: ids the clients pick from."""

    products: dict[int, int]  # id -> seeded stock
    coupons: list[int]
    concert: int
    days: list[str]
    artworks: list[int]
    posts: list[int]
    jobs: list[str] = field(default_factory=list)  # the seed's own (its charges)


@dataclass
class Person:
    """A client: a user, their token and what they hold."""

    token: str
    coupons: list[int] = field(default_factory=list)
    queue_token: str | None = None
    likes: set[int] = field(default_factory=set)

    @property
    def auth(self) -> dict[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {self.token}"}


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
               headers: dict | None = None) -> tuple[int | None, Any]:
    """One request: ``(status, json)``, or ``(None, None)`` when no answer came."""
    try:
        async with session.request(method, url, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None, None


class Load:
    """Clients sending a mixed load to both web processes until ``stop`` is set."""

    def __init__(self, bases: list[str], world: World, tally: Tally, seed: int) -> None:
        self.bases, self.world, self.tally = bases, world, tally
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict | None = None) -> tuple[int | None, Any]:
        """One request to either web process: ``(status, json)``, or ``(None, None)``."""
        assert self.session is not None
        url = f"{self.rng.choice(self.bases)}{API}{path}"
        return await call(self.session, method, url, body, headers)

    async def command(self, name: str, method: str, path: str, who: Person,
                      body: Any = None, headers: dict | None = None) -> dict | None:
        """Send a command; its job when accepted."""
        status, reply = await self.request(method, path, body if body is not None else {},
                                           who.auth | (headers or {}))
        self.tally.answered(name, status, reply)
        return reply if status in (200, 202) and isinstance(reply, dict) else None

    async def outcome(self, job: dict | None, who: Person, timeout: float = 15) -> dict | None:
        """The job's result if it succeeded within ``timeout`` seconds, else None."""
        if job is None:
            return None
        deadline = time.monotonic() + timeout
        while job.get("status") not in ("succeeded", "failed"):
            if time.monotonic() > deadline or self.stop.is_set():
                return None
            status, body = await self.request("GET", f"/jobs/{job['id']}?wait=5", None, who.auth)
            if status == 200:
                job = body
            else:
                self.tally.reads_failed += 1
                await asyncio.sleep(0.5)
        return job["result"] if job["status"] == "succeeded" else None

    async def client(self, who: Person) -> None:
        """One user's loop: a random action, a short pause, again."""
        actions: list[tuple[Callable, int]] = [
            (self.charge, 15), (self.order, 20), (self.coupon, 5), (self.seat, 15),
            (self.bid, 15), (self.like, 25), (self.comment, 5)]
        steps, weights = zip(*actions, strict=True)
        while not self.stop.is_set():
            try:
                await self.rng.choices(steps, weights)[0](who)
            except (KeyError, TypeError) as e:  # an answer without what it should hold
                self.tally.odd_answers.append(repr(e))
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def charge(self, who: Person) -> None:
        await self.command("points.charge", "POST", "/points/charge", who,
                           {"amount": self.rng.randrange(1_000, 50_000)})

    async def order(self, who: Person) -> None:
        picked = self.rng.sample(list(self.world.products), self.rng.randint(1, 2))
        body: dict[str, Any] = {"items": [{"product_id": p, "quantity": self.rng.randint(1, 3)}
                                          for p in picked]}
        if who.coupons and self.rng.random() < 0.5:
            body["user_coupon_id"] = who.coupons.pop()
        made = await self.outcome(await self.command("orders.create", "POST", "/orders", who,
                                                     body), who)
        if made is not None and self.rng.random() < 0.8:
            await self.outcome(await self.command(
                "orders.pay", "POST", f"/orders/{made['order_id']}/payment", who), who)

    async def coupon(self, who: Person) -> None:
        coupon = self.rng.choice(self.world.coupons)
        issued = await self.outcome(await self.command(
            "coupons.issue", "POST", f"/coupons/{coupon}/issue", who), who)
        if issued is not None:
            who.coupons.append(issued["user_coupon_id"])

    async def seat(self, who: Person) -> None:
        if who.queue_token is None:
            status, place = await self.request("POST", "/queue/tokens",
                                               {"concert_id": self.world.concert}, who.auth)
            if status not in (200, 201) or place.get("status") != "ACTIVE":
                self.tally.reads_failed += 1
                return
            who.queue_token = place["token"]
        queue = {"Queue-Token": who.queue_token}
        body = {"concert_id": self.world.concert, "date": self.rng.choice(self.world.days),
                "seat_no": self.rng.randint(1, 50)}
        job = await self.command("concert.reserve", "POST", "/reservations", who, body, queue)
        if job is None:
            who.queue_token = None  # lost with Redis, or ended by a payment: take another
            return
        held = await self.outcome(job, who)
        if held is not None and self.rng.random() < 0.97:
            paid = await self.command("concert.pay", "POST",
                                      f"/reservations/{held['reservation_id']}/payment", who,
                                      None, queue)
            if paid is None or await self.outcome(paid, who) is not None:
                who.queue_token = None

    async def bid(self, who: Person) -> None:
        artwork = self.rng.choice(self.world.artworks)
        status, art = await self.request("GET", f"/artworks/{artwork}", None, who.auth)
        if status != 200:
            self.tally.reads_failed += 1
            return
        if art["status"] != "OPEN" or art["min_next_bid"] > 2_000_000:  # beyond most wallets
            return
        if art["instant_price"] and self.rng.random() < 0.02:
            await self.command("auction.buy_now", "POST", f"/artworks/{artwork}/buy-now", who)
            return
        amount = art["min_next_bid"] + self.rng.randrange(0, 300)
        await self.command("auction.bid", "POST", f"/artworks/{artwork}/bids", who,
                           {"amount": amount, "max_amount": amount + self.rng.randrange(0, 3_000)})

    async def like(self, who: Person) -> None:
        post = self.rng.choice(self.world.posts)
        if post in who.likes:
            if await self.command("sns.unlike", "DELETE", f"/posts/{post}/likes", who):
                who.likes.discard(post)
        elif await self.command("sns.like", "POST", f"/posts/{post}/likes", who):
            who.likes.add(post)

    async def comment(self, who: Person) -> None:
        post = self.rng.choice(self.world.posts)
        await self.command("sns.comment", "POST", f"/posts/{post}/comments", who,
                           {"comment": f"soak {self.rng.randrange(10**6)}"})

    async def run(self, people: list[Person], until: threading.Event) -> None:
        """Run every client until ``until`` is set."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as self.session:
            clients = [asyncio.create_task(self.client(p)) for p in people]
            while not until.is_set():
                await asyncio.sleep(0.2)
            self.stop.set()
            await asyncio.gather(*clients)


# -- seed ----------------------------------------------------------------------------------


def seed(api: Api, env: dict[str, str], clients: int, rng: random.Random) -> tuple[World, list]:
    """The catalog, coupons, a concert, artworks and posts, through the API; the clients."""
    bazaar(env, "create-admin", "soak_admin", "--password-stdin", stdin="soak-admin-password\n")
    admin = api.login("soak_admin", "soak-admin-password")["access_token"]
    now = datetime.now(UTC)
    products = {}
    for name, stock in STOCK.items():
        made = api.post("/admin/products", {"name": name, "price": rng.randrange(500, 5_000),
                                            "stock": stock}, token=admin)
        products[made.body["id"]] = stock
    window = {"starts_at": (now - timedelta(hours=1)).isoformat(),
              "ends_at": (now + timedelta(days=1)).isoformat()}
    coupons = [api.post("/admin/coupons", {"name": f"soak {n}", "discount_type": "FIXED",
                                           "discount_value": 500, "stock": 20, **window},
                        token=admin).body["id"] for n in range(3)]
    days = [(date(2027, 9, 1) + timedelta(days=n)).isoformat() for n in range(40)]
    concert = api.post("/admin/concerts", {"title": "soak", "dates": [
        {"date": d, "seat_price": 1_000} for d in days]}, token=admin).body["id"]
    api.post("/users/signup", {"username": "soak_artist", "password": "password123",
                               "is_artist": True})
    artist = api.login("soak_artist")["access_token"]
    artworks = [api.post("/artworks", {
        "title": f"soak {n}", "genre": "PAINTING", "start_price": 1_000,
        "instant_price": 60_000 if n % 3 == 0 else None,
        "ends_at": (now + timedelta(seconds=90 + 60 * n)).isoformat()},
                         token=artist).body["id"] for n in range(6)]
    posts = [api.post("/posts", {"title": f"soak {n}", "body": "a post to like"},
                      token=artist).body["id"] for n in range(5)]
    world = World(products, coupons, concert, days, artworks, posts)
    people = [Person(api.signup_login(f"soak_{n}")) for n in range(clients)]
    for person in people:
        reply = api.post("/points/charge", {"amount": 500_000}, token=person.token,
                         headers={"Prefer": "wait=10"})
        assert reply.status == 200 and reply.body["status"] == "succeeded", reply
        world.jobs.append(reply.body["id"])
    return world, people


# -- faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault: what, when (seconds into the load), the jobs in flight as it struck, and
    how long after the restart a command through each web process succeeded again
    (``serving``) and every job in flight was terminal (``finished``)."""

    kind: str
    at: float
    detail: str = ""
    in_flight: list[str] = field(default_factory=list)
    down: float = 0.0  # the kill until the restart
    serving: float | None = None
    finished: float | None = None
    refused: int = 0  # 503s and connection errors the clients saw meanwhile

    HEADER = (f"  {'t':>6}  {'fault':<9}  {'what':<30}  {'down':>5}  {'serving':>7}  "
              f"{'in flight':>9}  {'finished':>8}  {'refused':>7}")

    def line(self) -> str:
        """A report line, under ``HEADER``."""
        def secs(value: float | None) -> str:
            return "never" if value is None else f"{value:.1f}s"

        return (f"  {self.at:5.1f}s  {self.kind:<9}  {self.detail:<30}  {secs(self.down):>5}  "
                f"{secs(self.serving):>7}  {len(self.in_flight):>9}  {secs(self.finished):>8}  "
                f"{self.refused:>7}")


class Faults:
    """Injects each fault in turn, waiting for recovery before the next."""

    def __init__(self, cluster: Cluster, pg: PrivatePostgres, rds: PrivateRedis,
                 tally: Tally, probe: str, outage: float) -> None:
        self.cluster, self.pg, self.redis, self.tally = cluster, pg, rds, tally
        self.probe, self.outage = probe, outage
        self.done: list[Fault] = []
        self.role = ""  # the process role the current fault killed

    def run(self, plan: list[float], began: float, stop: threading.Event) -> None:
        """Inject ``FAULTS[i]`` at ``plan[i]`` seconds (or after the previous recovery),
        each in the middle of a burst of charges, so that it strikes jobs in flight.

        Redis dies with the whole burst queued in it (the workers are paused while it
        arrives): the re-send sweep alone can bring those jobs back.
        """
        for kind, at in zip(FAULTS, plan, strict=True):
            while time.monotonic() - began < at and not stop.is_set():
                time.sleep(0.1)
            if stop.is_set():
                return
            if kind == "redis":
                self.cluster.signal_workers(signal.SIGSTOP)
            answered = self.tally.sent[BURST] + 100
            burst = threading.Thread(target=asyncio.run, args=(self.burst(),))
            burst.start()
            while burst.is_alive() and (kind == "redis" or self.tally.sent[BURST] < answered):
                time.sleep(0.005)
            with self.cluster.lock:
                fault = Fault(kind, time.monotonic() - began, in_flight=self.in_flight())
                struck = time.monotonic()
                try:
                    fault.detail = self.kill(kind)
                finally:
                    if kind == "redis":
                        self.cluster.signal_workers(signal.SIGCONT)
                time.sleep(self.outage)
                self.restart(kind)
            restarted = time.monotonic()
            burst.join()
            fault.down = restarted - struck
            fault.serving = self.serving(restarted + 120)
            fault.finished = self.finished(fault.in_flight, restarted + 120)
            fault.refused = sum(struck <= t for t in self.tally.refused_at)
            self.done.append(fault)

    async def burst(self, count: int = 300) -> None:
        """Send ``count`` charges, 32 at a time, to both web processes in turn."""
        auth = {"Authorization": f"Bearer {self.probe}"}
        gate = asyncio.Semaphore(32)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def one(n: int) -> None:
                async with gate:
                    self.tally.answered(BURST, *await call(
                        session, "POST", f"{self.cluster.bases[n % 2]}{API}/points/charge",
                        {"amount": 1}, auth))

            await asyncio.gather(*(one(n) for n in range(count)))

    def _unfinished(self, among: list[str] | None = None) -> list[str]:
        """The ids of the jobs not terminal yet (``among`` these, if given)."""
        db = make_database(self.pg.url, 1)
        try:
            with db.connection_context():
                rows = db.execute_sql(UNFINISHED + (" AND id = ANY(%s::uuid[])" if among else ""),
                                      (among,) if among else ())
                return [job_id for (job_id,) in rows.fetchall()]
        finally:
            db.close_all()

    def in_flight(self) -> list[str]:
        """The jobs not terminal yet, as a fault strikes."""
        return self._unfinished()

    def finished(self, jobs: list[str], deadline: float) -> float | None:
        """Seconds until every one of ``jobs`` is terminal (None: not by ``deadline``)."""
        started = time.monotonic()
        while jobs and time.monotonic() < deadline:
            with contextlib.suppress(peewee.DatabaseError):
                jobs = self._unfinished(jobs)
            time.sleep(0.2)
        return None if jobs else time.monotonic() - started

    def kill(self, kind: str) -> str:
        """Inject one fault; what was hit."""
        if kind == "redis":
            self.redis.crash()
            return "SIGKILL, with a backlog"
        if kind == "postgres":
            self.pg.crash()
            return "pg_ctl stop -m immediate"
        self.role = {"worker": "worker1", "web": "web2"}.get(kind) or self.active_scheduler()
        pid = self.cluster.pid(self.role)
        self.cluster.kill(self.role)
        return f"SIGKILL {self.role} (pid {pid})"

    def restart(self, kind: str) -> None:
        """Start again what ``kill`` stopped."""
        if kind == "redis":
            self.redis.start()
        elif kind == "postgres":
            self.pg.start()
        else:
            self.cluster.start(self.role)

    def active_scheduler(self) -> str:
        """The scheduler role named in ``{prefix}:scheduler:active``."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                name = (client.get(f"{PREFIX}:scheduler:active") or b"").decode()
                for role in ("scheduler1", "scheduler2"):
                    if name and int(name.split(":")[1]) == self.cluster.pid(role):
                        return role
                time.sleep(0.2)
        finally:
            client.close()
        raise RuntimeError("no active scheduler named in Redis")

    def serving(self, deadline: float) -> float | None:
        """Seconds until a charge through each web process succeeds again."""
        started = time.monotonic()
        pending = list(self.cluster.bases)
        while pending and time.monotonic() < deadline:
            reply = None
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                reply = Api(pending[0]).post("/points/charge", {"amount": 1}, token=self.probe,
                                             headers={"Prefer": "wait=5"}, timeout=10)
            if reply is not None:
                self.tally.answered("points.charge (probe)", reply.status, reply.body)
            if reply is not None and reply.status == 200 and reply.body["status"] == "succeeded":
                pending.pop(0)
            else:
                time.sleep(0.2)
        return None if pending else time.monotonic() - started


# -- the run -------------------------------------------------------------------------------


@dataclass
class Report:
    """The soak's outcome."""

    text: str
    ok: bool
    invariants: list[check.Outcome]
    lost: list[str]
    unfinished: list[str]
    server_errors: int
    faults: list[Fault]
    exited: list[str]  # processes that exited by themselves (restarted as a supervisor would)


def process_env(pg: PrivatePostgres, rds: PrivateRedis) -> dict[str, str]:
    """The environment of every Bazaar process of the soak."""
    return {
        "DATABASE_URL": pg.url, "REDIS_URL": rds.url, "REDIS_PREFIX": PREFIX,
        "JWT_SECRET": "soak-secret-0123456789-0123456789", "SCRYPT_N": "1024",
        "SECURE_COOKIES": "false", "LOG_LEVEL": "WARNING", "DB_POOL_SIZE": "8",
        "ACCESS_TOKEN_TTL": "7200", "LOGIN_FAIL_LIMIT_ADDRESS": "1000000",
        # a killed worker's messages come back after 5 s; unsent jobs are re-sent after 5 s
        "BROKER_HEARTBEAT_TIMEOUT_MS": "5000", "BROKER_MAINTENANCE_INTERVAL": "0.5",
        "RESEND_INTERVAL": "2", "JOB_RESEND_AFTER": "5",
        # everyone is let in at once; auctions close within the run
        "QUEUE_ACTIVE_LIMIT": "1000", "AUCTION_SOFT_CLOSE": "5", "AUCTION_MAX_EXTENSION": "30",
        # the recount would repair drifted like counts: the checker must see any drift
        "FEED_RECOUNT_INTERVAL": "86400",
    }


def run_soak(seconds: float, clients: int = 24, outage: float = 2.0, settle: float = 180,
             seed_value: int = 1, keep: Path | None = None) -> Report:
    """Start everything, load it for ``seconds`` while injecting the five faults (evenly
    spread, the first after 15 % of the time), settle, check; the report."""
    root = Path(tempfile.mkdtemp(prefix="bazaar-soak-"))
    pg, rds = PrivatePostgres(root), PrivateRedis(root)
    cluster = None
    try:
        with logs_in(root):
            began = time.monotonic()
            pg.create()
            rds.start()
            env = process_env(pg, rds)
            bazaar(env, "migrate")
            cluster = Cluster(env)
            for role in reversed(Cluster.ROLES):  # the webs last: starting them waits
                cluster.start(role)
            api = Api(cluster.bases[0])
            world, people = seed(api, env, clients, random.Random(seed_value))
            probe = api.signup_login("soak_probe")
            started = time.monotonic() - began
            tally = Tally()
            faults = Faults(cluster, pg, rds, tally, probe, outage)
            plan = [seconds * (0.15 + 0.7 * n / (len(FAULTS) - 1)) for n in range(len(FAULTS))]
            began, stop = time.monotonic(), threading.Event()
            injector = threading.Thread(target=faults.run, args=(plan, began, stop))
            injector.start()
            load = Load(cluster.bases, world, tally, seed_value)
            loader = threading.Thread(target=asyncio.run, args=(load.run(people, stop),))
            loader.start()
            while (time.monotonic() - began < seconds or injector.is_alive()) \
                    and time.monotonic() - began < seconds + 600:
                cluster.revive_the_dead(began)
                time.sleep(0.5)
            stop.set()
            injector.join()
            loader.join()
            return finish(env, cluster, tally, faults.done, world,
                          (started, time.monotonic() - began), settle)
    finally:
        if cluster is not None:
            cluster.stop()
        if rds.proc is not None:
            rds.stop()
        pg.stop()
        if keep is not None:
            shutil.copytree(root, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("pg"))
        shutil.rmtree(root, ignore_errors=True)


def finish(env: dict[str, str], cluster: Cluster, tally: Tally, faults: list[Fault],
           world: World, took: tuple[float, float], settle: float) -> Report:
    """Settle, check the invariants and the clients' view; the report (``took``: the
    seconds of start-up and of load)."""
    db = make_database(env["DATABASE_URL"], 2)  # not bound to the models: a test may run this
    settled = time.monotonic()
    hold_limit = int(env.get("HOLD_LIMIT", concerts.HOLD_LIMIT))
    outcomes = check.check(db, hold_limit, settle, world.products)
    settled = time.monotonic() - settled
    with db.connection_context():
        rows = db.execute_sql("SELECT id::text, status, error::jsonb ->> 'code' FROM jobs")
        jobs = {job_id: (status, code) for job_id, status, code in rows.fetchall()}
    db.close_all()
    lost = [job_id for job_id in tally.accepted if job_id not in jobs]
    unfinished = [job_id for job_id in tally.accepted
                  if job_id in jobs and jobs[job_id][0] not in ("succeeded", "failed")]
    server_errors = sum(n for answer, n in tally.answers.items()
                        if answer[:1] == "5" and not answer.startswith("503"))
    ok = all(o.ok is not False for o in outcomes) and not lost and not unfinished \
        and not server_errors and not tally.odd_answers and not cluster.dead
    text = render(tally, faults, cluster, jobs, world, outcomes, lost, unfinished,
                  (*took, settled))
    return Report(text + f"\nverdict: {'PASS' if ok else 'FAIL'}", ok, outcomes, lost,
                  unfinished, server_errors, faults, cluster.dead)


def render(tally: Tally, faults: list[Fault], cluster: Cluster, jobs: dict[str, tuple],
           world: World, outcomes: list[check.Outcome], lost: list[str], unfinished: list[str],
           took: tuple[float, float, float]) -> str:
    """The report's text (``took``: seconds of start-up, load and settling)."""
    sent = sum(tally.sent.values())
    lines = [f"machine: {machine()}",
             "start-up (servers, migrations, 6 processes, seed) {:.1f}s; load {:.0f}s; all "
             "jobs terminal {:.1f}s later".format(*took),
             f"commands sent: {sent:,} ({counts(tally.sent)})",
             f"answers: {counts(tally.answers)}",
             f"reads that failed (job polls, artworks, queue tokens): {tally.reads_failed:,}; "
             f"answers missing a field: {len(tally.odd_answers)} {tally.odd_answers[:3]}",
             "faults (t: seconds into the load; serving and finished: after the restart):",
             Fault.HEADER, *(f.line() for f in faults),
             *(f"  {line}" for line in cluster.dead)]
    outcome: Counter[str] = Counter()
    for job_id in tally.accepted:
        if job_id in jobs:
            status, code = jobs[job_id]
            outcome[status if code is None else f"failed {code}"] += 1
    unseen = set(jobs) - set(tally.accepted) - set(world.jobs)
    lines += [f"accepted: {len(tally.accepted):,}; lost (accepted, never recorded): "
              f"{len(lost)}; not terminal: {len(unfinished)}",
              f"accepted jobs by outcome: {counts(outcome)}",
              f"jobs recorded whose acceptance the client never saw (the answer was lost "
              f"in a fault): {len(unseen):,}",
              "invariants:", *(f"  {o.line()}" for o in outcomes)]
    return "\n".join(lines)


def counts(counter: Counter[str]) -> str:
    """``a 3, b 1``, the largest first."""
    return ", ".join(f"{key} {n:,}" for key, n in counter.most_common())


def main() -> None:
    """Run the soak and print its report; exit 1 if it failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy the processes' logs to this directory")
    args = parser.parse_args()
    report = run_soak(args.minutes * 60, args.clients, keep=args.keep_logs)
    print(report.text)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
