"""The ``bazaar`` command: dev, web, worker, scheduler, migrate, create-admin, demo-data,
outbox-replay."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Mapping

from db.logs import configure_logging
from db.settings import Settings, SettingsError
from jobs.platform import load_domains
from web.cli_env import ADMIN_PASSWORD, environment_help

log = logging.getLogger(__name__)
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
    print(f"replayed {replayed} dead event(s); outbox now: {counts}")
    return 0


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the HTTP API on ``$PORT``."""
    from aiohttp import web

    from db.connection import connect_database
    from web.app import create_app, redis_client, server_options
    from web.listener import PortInUse, listen, url_of
    from workers.broker import build_broker

    if settings.embedded:
        print("bazaar web needs REDIS_URL; use `bazaar dev` for the embedded system")
        return 2
    database = connect_database(settings.database_url, settings.db_pool_size)
    broker = build_broker(settings)
    client = redis_client(settings.redis_url)
    app = create_app(settings, database, broker, client)
    try:
        sock = listen(settings.host, settings.port, reuse_port=True)
    except PortInUse as e:
        print(f"bazaar web: {e}", file=sys.stderr)
        return 1
    log.info("listening on %s", url_of(sock), extra={"url": url_of(sock)})
    web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True,
                **server_options(settings))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run Dramatiq workers (``WORKER_PROCESSES`` x ``WORKER_THREADS``)."""
    argv = [
        sys.executable, "-m", "dramatiq", "workers.main",
        "--processes", os.environ.get("WORKER_PROCESSES", "2"),
        "--threads", os.environ.get("WORKER_THREADS", "8"),
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
    scheduler.register(schedule_table(settings))
    scheduler.run_until(stop)
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
    commands = {}
    for name, run, details in COMMANDS:
        summary = " ".join(run.__doc__.replace("``", "").split())
        text = "\n".join(line if line.startswith(" ") else textwrap.fill(line, 80)
                         for line in f"{summary}\n\n{details}".strip().splitlines())
        commands[name] = sub.add_parser(
            name, help=summary, description=text, epilog=environment_help(name),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        commands[name].set_defaults(run=run)
    admin = commands["create-admin"]
    admin.add_argument("username")
    admin.add_argument("password", nargs="?", default=None,
                       help="the password (visible in the process list and shell history: "
                            "prefer --password-stdin or BAZAAR_ADMIN_PASSWORD)")
    admin.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input (its first line), or "
                            "prompt for it on a terminal")
    commands["dev"].add_argument("--port", type=int, default=None,
                                 help="port on 127.0.0.1 (default: $PORT, or 8000)")
    return parser


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
    ("outbox-replay", cmd_outbox_replay, ""),
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
