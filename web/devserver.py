"""``bazaar dev``: the whole system in one process on embedded defaults.

With no ``REDIS_URL``, Redis is an in-process fakeredis server and the broker is
Dramatiq's in-process stub with worker threads; with no ``DATABASE_URL``, the
database is a SQLite file under ``var/``. Real services are used when configured.
"""

from __future__ import annotations

import socket
import sys
import threading

import dramatiq
import fakeredis
import redis
import redis.asyncio as aioredis

from db.migrate import migrate
from db.settings import Settings
from jobs.demo import load_demo_data
from jobs.users import hash_password
from scheduler.bridge import DramatiqScheduler
from scheduler.schedule import schedule_table
from web import fastlane
from web.app import create_app, redis_client, server_options
from web.listener import BACKLOG, PortInUse, listen, url_of
from workers import bootstrap
from workers.broker import thread_client


def _redis_clients(settings: Settings, threads: int) -> tuple[redis.Redis, aioredis.Redis]:
    if settings.redis_url:
        return (thread_client(settings.redis_url, threads),
                redis_client(settings.redis_url))
    server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=server), fakeredis.FakeAsyncRedis(server=server)


def run(settings: Settings, port: int | None = None, worker_threads: int = 4) -> int:
    """Migrate, start workers and the scheduler in threads, and serve until interrupted.

    The port is taken first: if it is in use, say so and return 1 before starting anything.
    """
    port = port or settings.port
    try:
        sock = listen("127.0.0.1", port)
    except PortInUse as e:
        print(f"bazaar dev: {e} (another `bazaar dev`?); stop that one, or choose another "
              "port with --port N", file=sys.stderr, flush=True)
        return 1
    try:
        return _serve(settings, sock, worker_threads)
    finally:
        sock.close()


def _serve(settings: Settings, sock: socket.socket, worker_threads: int) -> int:
    sync_client, async_client = _redis_clients(settings, worker_threads)
    rt = bootstrap.start(settings, sync_client)
    migrate(rt.database)
    with rt.database.connection_context():
        demo = load_demo_data(lambda p: hash_password(p, settings.scrypt_n), rt.clock.now())
    worker = dramatiq.Worker(rt.broker, worker_threads=worker_threads, worker_timeout=100)
    bootstrap.start_worker(worker)
    stop = threading.Event()
    scheduler = DramatiqScheduler(sync_client, rt.broker, settings.redis_prefix,
                                  settings.scheduler_tick)
    ticker = threading.Thread(target=scheduler.run_until, name="scheduler",
                              args=(stop, schedule_table(settings)))
    ticker.start()
    app = create_app(settings, rt.database, rt.broker, async_client, rt.clock)
    where = settings.database_url if not settings.sqlite_path() else settings.sqlite_path()
    base = url_of(sock)
    print(
        f"Bazaar is running at {base}/  (Ctrl-C stops)\n"
        f"  API reference: {base}/api/v1/docs\n"
        f"  API base URL:  {base}/api/v1\n"
        f"  Operator console: {base}/console (an admin's login)\n"
        f"  database: {where}; redis: {settings.redis_url or 'in-process'}",
        flush=True,
    )
    if demo["users"]:
        print(f"demo data loaded; log in as {' or '.join(demo['users'])}", flush=True)
    try:
        fastlane.run(app, sock, backlog=BACKLOG, **server_options(settings))
    finally:
        stop.set()
        ticker.join(timeout=5)
        worker.stop()
    return 0
