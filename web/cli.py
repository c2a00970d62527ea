"""The ``bazaar`` command: dev, web, worker, scheduler, migrate, create-admin, demo-data,
outbox-replay."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from db.logs import configure_logging
from db.settings import Settings, SettingsError
from jobs.platform import load_domains


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
        msgspec.convert({"username": args.username, "password": args.password}, Signup)
    except msgspec.ValidationError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    db = connect_database(settings.database_url, 2)
    with db.connection_context():
        user, created = users.make_admin(
            args.username, users.hash_password(args.password, settings.scrypt_n), utcnow()
        )
    print(f"{'created' if created else 'promoted'} admin {user.username} (id {user.id})")
    return 0


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
    from web.app import create_app, redis_client
    from workers.broker import build_broker

    if settings.embedded:
        print("bazaar web needs REDIS_URL; use `bazaar dev` for the embedded system")
        return 2
    database = connect_database(settings.database_url, settings.db_pool_size)
    broker = build_broker(settings)
    client = redis_client(settings.redis_url)
    app = create_app(settings, database, broker, client)
    web.run_app(app, host=settings.host, port=settings.port, reuse_port=True,
                access_log=None, print=None, handle_signals=True)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bazaar`` console script."""
    parser = argparse.ArgumentParser(prog="bazaar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help=cmd_migrate.__doc__).set_defaults(run=cmd_migrate)
    admin = sub.add_parser("create-admin", help=cmd_create_admin.__doc__)
    admin.add_argument("username")
    admin.add_argument("password")
    admin.set_defaults(run=cmd_create_admin)
    sub.add_parser("demo-data", help=cmd_demo_data.__doc__).set_defaults(run=cmd_demo_data)
    sub.add_parser("outbox-replay", help=cmd_outbox_replay.__doc__).set_defaults(
        run=cmd_outbox_replay)
    sub.add_parser("web", help=cmd_web.__doc__).set_defaults(run=cmd_web)
    sub.add_parser("worker", help=cmd_worker.__doc__).set_defaults(run=cmd_worker)
    sub.add_parser("scheduler", help=cmd_scheduler.__doc__).set_defaults(run=cmd_scheduler)
    dev = sub.add_parser("dev", help=cmd_dev.__doc__)
    dev.add_argument("--port", type=int, default=None)
    dev.set_defaults(run=cmd_dev)
    args = parser.parse_args(argv)
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
