"""The ``bazaar`` command: dev, web, worker, scheduler, migrate, create-admin, demo-data,
outbox-replay, check (the database's invariants), and ``jobs failed`` / ``jobs replay``
(failed jobs: list them, replay them)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from db.logs import configure_logging
from db.settings import Settings, SettingsError
from jobs.platform import load_domains
from web.cli_env import ADMIN_PASSWORD, environment_help

log = logging.getLogger(__name__)
Command = Callable[[Settings, argparse.Namespace], int]
ABOUT = """Bazaar: one job platform for a shop, concert reservations, an art auction and a
social feed. An HTTP API takes commands and answers 202 with a job; workers run the jobs;
a scheduler runs the periodic sweeps.

Start with `bazaar dev`: all of it in one process, on a SQLite file and an in-process
Redis, with demo data; it prints the URL of the landing page and the API reference."""
EPILOG = """Settings are environment variables, read once when a command starts and checked
then (a bad value stops it with a message, exit status 2). `bazaar COMMAND --help` lists
the ones COMMAND reads; the first ones to know:
  DATABASE_URL   the database (default sqlite:///var/bazaar.sqlite3)
  REDIS_URL      Redis (unset: bazaar dev embeds one; web, worker and scheduler need it)
  PORT, HOST     where web and dev listen (default 8000; dev always on 127.0.0.1)
  LOG_LEVEL      INFO by default; logs are JSON lines on stderr"""


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending schema migrations (safe to run twice, or concurrently)."""
    from db.connection import make_database
    from db.migrate import migrate

    applied = migrate(make_database(settings.database_url, 2))
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    """Create an admin user, or promote an existing one (its password is kept)."""
    import msgspec

    from db.connection import connect_database
    from jobs import users
    from jobs.clock import utcnow
    from web.views.users import Signup

    try:
        password = admin_password(args, settings.env)
        msgspec.convert({"username": args.username, "password": password}, Signup)
    except (ValueError, msgspec.ValidationError) as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        user, created = users.make_admin(
            args.username, users.hash_password(password, settings.scrypt_n), utcnow()
        )
    print(f"{'created' if created else 'promoted'} admin {user.username} (id {user.id})")
    return 0


def admin_password(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """The password for create-admin: standard input, the argument, or the environment."""
    if args.password_stdin and args.password is not None:
        raise ValueError("give the password once: PASSWORD or --password-stdin, not both")
    if args.password_stdin:
        if sys.stdin.isatty():
            return getpass.getpass("password: ")
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        return args.password
    if env.get(ADMIN_PASSWORD):
        return env[ADMIN_PASSWORD]
    raise ValueError(f"no password: use --password-stdin, set {ADMIN_PASSWORD}, "
                     "or give it after the username")


def cmd_demo_data(settings: Settings, args: argparse.Namespace) -> int:
    """Load a small catalog, coupons, a concert, artworks with bids, feed posts with likes and
    comments, and users to try it all."""
    from db.connection import connect_database
    from jobs import users
    from jobs.clock import utcnow
    from jobs.demo import load_demo_data

    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        created = load_demo_data(lambda p: users.hash_password(p, settings.scrypt_n), utcnow())
    print(f"created {created['products']} products, {created['coupons']} coupons, "
          f"{created['concerts']} concert(s), {created['artworks']} artworks, "
          f"{created['posts']} posts; "
          f"users: {', '.join(created['users']) or 'already there'}")
    return 0


def cmd_outbox_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Give every DEAD data-platform event a fresh round of delivery attempts."""
    from db.connection import connect_database
    from jobs import outbox
    from jobs.clock import utcnow

    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        replayed = outbox.replay_dead(utcnow())
        counts = outbox.counts()
    per_status = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
    print(f"replayed {replayed} dead event(s); outbox now: {per_status}")
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Check the database's invariants; exit 1 if any fails."""
    from db.connection import connect_database, is_postgres
    from jobs import check

    db = connect_database(settings.database_url, 2)
    if not is_postgres(db):
        print("bazaar check needs PostgreSQL (DATABASE_URL=postgresql://...)", file=sys.stderr)
        return 2
    hold_limit = load_domains().settings(settings)["concerts"].hold_limit
    lines, holds = check.report(check.check(db, hold_limit, args.settle))
    print(lines)
    return 0 if holds else 1


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    """Failed jobs: list them (jobs failed), replay them (jobs replay)."""
    return args.action(settings, args)


def cmd_jobs_failed(settings: Settings, args: argparse.Namespace) -> int:
    """List failed jobs, newest first."""
    from db.connection import connect_database
    from db.models import Job, User
    from jobs import admin

    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        listed = admin.list_jobs("failed", args.type, args.code, args.q, args.limit, None)
        jobs = listed["items"]
        names = dict(User.select(User.id, User.username)
                     .where(User.id.in_({job["user_id"] for job in jobs})).tuples())
        total = len(jobs)
        if listed["next_cursor"] is not None:
            matching = admin._filtered(Job.select(), "failed", args.type, args.code, args.q)
            total = matching.count()
    if not jobs:
        print("no failed jobs")
        return 0
    rows = [("ID", "TYPE", "USER", "CODE", "ATTEMPTS", "FINISHED (UTC)", "REPLAY")]
    rows += [(job["id"], job["type"], names.get(job["user_id"], str(job["user_id"])),
              (job["error"] or {}).get("code", "-"), str(job["attempts"]),
              _moment(job["finished_at"]), _replay_state(job)) for job in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    shown = f"{len(jobs)} of {total}" if total > len(jobs) else f"{total}"
    print(f"{shown} failed job(s)")
    return 0


def _moment(value: str | None) -> str:
    """An API time (ISO 8601, UTC) as ``YYYY-MM-DD HH:MM:SS``."""
    return "-" if value is None else datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def _replay_state(job: dict) -> str:
    if job["replayed_by"] is not None:
        return f"replayed by {job['replayed_by']}"
    return "replayable" if job["replayable"] else "-"


def cmd_jobs_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Replay every replayable failed job of a type and reason code (once each)."""
    import redis

    from db.connection import connect_database
    from jobs import admin
    from jobs.clock import utcnow
    from workers.broker import build_broker, send_jobs

    if args.code not in (None, admin.REPLAYABLE):
        print(f"only {admin.REPLAYABLE} failures are replayable; a business refusal would "
              "refuse again", file=sys.stderr)
    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        if args.dry_run:
            print(f"would replay {_replayable_count(args.type, args.code)} job(s)")
            return 0
        broker = None if settings.embedded else build_broker(settings)
        send = None if broker is None else (lambda pairs: send_jobs(broker, pairs))
        progress = Progress()
        try:
            replayed = admin.replay_matching(args.type, args.code, utcnow(), send, progress)
        except redis.RedisError as e:
            progress.done()
            print(f"bazaar jobs replay: Redis: {e}; {progress.total} replay(s) sent, and "
                  "the re-send sweep sends those recorded but not sent", file=sys.stderr)
            return 1
        finally:
            if broker is not None:
                broker.close()
    progress.done()
    print(f"replayed {replayed} job(s)")
    if broker is None and replayed:
        print("no REDIS_URL: the running `bazaar dev` sends them within seconds")
    return 0


def _replayable_count(job_type: str | None, code: str | None) -> int:
    """How many failed jobs ``jobs replay`` would replay (read page by page)."""
    from jobs import admin

    if code not in (None, admin.REPLAYABLE):
        return 0
    count, cursor = 0, None
    while True:
        page = admin.list_jobs("failed", job_type, admin.REPLAYABLE, None, admin.BATCH, cursor)
        count += sum(job["replayable"] for job in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return count


class Progress:
    """The running total of a long replay on stderr: one line redrawn on a terminal, a
    line per batch otherwise; nothing for a run of one short batch."""

    def __init__(self) -> None:
        self.total, self.shown, self.tty = 0, False, sys.stderr.isatty()

    def __call__(self, total: int) -> None:
        """After each batch: ``total`` replayed so far."""
        from jobs.admin import BATCH

        self.total = total
        if total < BATCH and not self.shown:
            return
        self.shown = True
        if self.tty:
            print(f"\rreplayed {total}…", end="", file=sys.stderr, flush=True)
        else:
            print(f"replayed {total}…", file=sys.stderr, flush=True)

    def done(self) -> None:
        """Clear the redrawn line before the final count."""
        if self.tty and self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the HTTP API on ``$PORT``."""
    from db.connection import connect_database
    from web import fastlane
    from web.app import create_app, redis_client, server_options
    from web.listener import BACKLOG, PortInUse, listen, url_of
    from workers.bootstrap import calm_garbage_collector
    from workers.broker import build_broker

    if settings.embedded:
        print("bazaar web needs REDIS_URL; use `bazaar dev` for the embedded system")
        return 2
    database = connect_database(settings.database_url, settings.db_pool_size)
    broker = build_broker(settings)
    client = redis_client(settings.redis_url)
    app = create_app(settings, database, broker, client)
    try:
        # (bound now; listening once the app is ready: see ``listen``)
        sock = listen(settings.host, settings.port, reuse_port=True, listening=False)
    except PortInUse as e:
        print(f"bazaar web: {e}", file=sys.stderr)
        return 1
    log.info("serving on %s once started", url_of(sock), extra={"url": url_of(sock)})
    calm_garbage_collector()
    fastlane.run(app, sock, backlog=BACKLOG, loop=event_loop(), **server_options(settings))
    return 0


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (it costs the door about a third less
    CPU per request), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run Dramatiq workers (``WORKER_PROCESSES`` x ``WORKER_THREADS``)."""
    argv = [
        sys.executable, "-m", "dramatiq", "workers.main",
        "--processes", str(settings.worker_processes),
        "--threads", str(settings.worker_threads),
    ]
    # How long an idle consumer may sleep between polls (Dramatiq's default is 1 s).
    os.environ.setdefault("dramatiq_worker_timeout", os.environ.get("WORKER_POLL_MS", "100"))
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    """Run the scheduler (run two; one dispatches at a time)."""
    import redis

    from scheduler.bridge import DramatiqScheduler
    from scheduler.schedule import schedule_table
    from workers.broker import build_broker

    if settings.embedded:
        print("bazaar scheduler needs REDIS_URL; use `bazaar dev` for the embedded system")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client = redis.Redis.from_url(settings.redis_url)
    scheduler = DramatiqScheduler(client, build_broker(settings), settings.redis_prefix,
                                  settings.scheduler_tick)
    scheduler.run_until(stop, schedule_table(settings))  # (waits for Redis if it must)
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Run web, workers and scheduler in one process on embedded defaults."""
    from web.devserver import run

    return run(settings, args.port)


def build_parser() -> argparse.ArgumentParser:
    """The command line: each command with its description and the variables it reads."""
    parser = argparse.ArgumentParser(prog="bazaar", description=ABOUT, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: add_command(sub, name, run, details) for name, run, details in COMMANDS}
    commands["jobs"].set_defaults(run=cmd_jobs)
    actions = commands["jobs"].add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, details in JOB_COMMANDS:
        commands[f"jobs {name}"] = add_command(actions, name, run, details, f"jobs {name}")
        commands[f"jobs {name}"].set_defaults(action=run)
    for name in ("jobs failed", "jobs replay"):
        commands[name].add_argument("--type", help="only jobs of this type, e.g. points.charge")
        commands[name].add_argument("--code", help="only jobs that failed with this reason "
                                    "code, e.g. INTERNAL_ERROR")
    failed = commands["jobs failed"]
    failed.add_argument("--q", help="only jobs whose type, payload or error contains this "
                        "text (or whose id it is)")
    failed.add_argument("--limit", type=positive, default=50,
                        help="at most this many (default 50)")
    commands["jobs replay"].add_argument("--dry-run", action="store_true",
                                         help="only count the jobs it would replay")
    admin = commands["create-admin"]
    admin.add_argument("username")
    admin.add_argument("password", nargs="?", default=None,
                       help="the password (visible in the process list and shell history: "
                            "prefer --password-stdin or BAZAAR_ADMIN_PASSWORD)")
    admin.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input (its first line), or "
                            "prompt for it on a terminal")
    commands["check"].add_argument("--settle", type=float, default=0, metavar="SECONDS",
                                   help="first wait up to SECONDS for unfinished jobs to "
                                        "finish (default 0)")
    commands["dev"].add_argument("--port", type=int, default=None,
                                 help="port on 127.0.0.1 (default: $PORT, or 8000)")
    return parser


def positive(text: str) -> int:
    """An argument that must be a whole number above 0."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def add_command(sub: argparse._SubParsersAction, name: str, run: Command, details: str,
                env_name: str | None = None) -> argparse.ArgumentParser:
    """A command's parser: its summary (the docstring of ``run``), details and the
    environment variables it reads."""
    summary = " ".join(run.__doc__.replace("``", "").split())
    text = "\n".join(line if line.startswith(" ") else textwrap.fill(line, 80)
                     for line in f"{summary}\n\n{details}".strip().splitlines())
    command = sub.add_parser(name, help=summary, description=text,
                             epilog=environment_help(env_name or name),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    command.set_defaults(run=run)
    return command


COMMANDS = [
    ("dev", cmd_dev, "Embedded defaults: a SQLite file in var/ unless DATABASE_URL is set, an "
     "in-process Redis unless REDIS_URL is set, Dramatiq worker threads and the scheduler "
     "in this process; demo data on first start. Prints the landing page's URL. Exits "
     "with status 1 if the port is taken."),
    ("web", cmd_web, "Logs the address it listens on. Several can share the port "
     "(SO_REUSEPORT). Needs REDIS_URL."),
    ("worker", cmd_worker, "Runs `dramatiq workers.main`. Needs REDIS_URL."),
    ("scheduler", cmd_scheduler, "Fires the periodic sweeps; run two, one dispatches each "
     "slot. Needs REDIS_URL."),
    ("migrate", cmd_migrate, "Numbered migrations from db/migrations."),
    ("create-admin", cmd_create_admin, "The password comes from standard input "
     "(--password-stdin: safest), from $BAZAAR_ADMIN_PASSWORD, or from the command line "
     "(visible to other users of the machine), e.g.\n"
     "  printf '%s\\n' \"$PW\" | bazaar create-admin boss --password-stdin"),
    ("demo-data", cmd_demo_data, "What `bazaar dev` loads on first start; safe to run again."),
    ("outbox-replay", cmd_outbox_replay, "Prints how many it replayed and the events per "
     "status."),
    ("check", cmd_check, "One line per invariant (OK, FAIL with the first offending rows, "
     "or SKIP), all read in one snapshot: every accepted job is terminal; no charge, "
     "order, payment, coupon or seat hold applied twice; balances equal their history and "
     "points are conserved; coupons, seats, escrow, auctions and feed counts agree with "
     "their rows. Unfinished jobs younger than 10 s are not counted (they may be running); "
     "--settle waits for those recorded before the check began instead. PostgreSQL only."),
    ("jobs", cmd_jobs, "`bazaar jobs failed` is a table of failed jobs; `bazaar jobs replay "
     "--type T --code INTERNAL_ERROR` replays them. `bazaar jobs ACTION --help` says more."),
]
JOB_COMMANDS = [
    ("failed", cmd_jobs_failed, "A table: id, type, user, reason code, attempts, when it "
     "finished, and whether it can be replayed (or which job replayed it); then how many "
     "match."),
    ("replay", cmd_jobs_replay, "Only INTERNAL_ERROR failures are replayable: a business "
     "refusal would say no again. Each replay is a new job of the same type, owner and "
     "payload, linked to the failed one, which is never replayed twice. Sent to Redis as "
     "it goes; without REDIS_URL, the running `bazaar dev` sends them within seconds."),
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bazaar`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        load_domains().settings(settings)  # each domain's settings fail here, clearly
    except (SettingsError, ValueError) as e:
        print(f"bazaar: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return args.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
