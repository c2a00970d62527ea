"""The whole system inside the test process, for plain contract tests.

The aiohttp app runs on an event loop of its own thread and Dramatiq's worker runs as
threads, both against the real PostgreSQL and Redis of the session: no process to
spawn, no start-up to wait for. Crash, recovery, scheduler and race tests keep using
real processes (``tests.support.Stack``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from aiohttp import web

from db.connection import database
from db.settings import Settings
from jobs.clock import Clock
from tests.support import Api, free_port
from web.app import create_app, redis_client, server_options
from web.fastlane import LaneSite
from web.listener import listen
from workers import bootstrap

STOP_SECONDS = 60.0  # for a worker's threads to finish what they hold


@dataclass
class InProcessStack:
    """``start_web``/``start_worker``/``kill``/``stop`` like ``Stack``, in this process.

    ``clock`` (a ``FixedClock``, say) is the web app's: its job records and its limits.
    """

    env: dict[str, str]
    clock: Clock | None = None
    port: int = field(default_factory=free_port)
    procs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._outer_database = database.obj  # the test session's, given back on stop()
        self.settings = Settings.from_env(self.env)
        self.client = redis.Redis.from_url(self.settings.redis_url)
        self.runtime = bootstrap.start(self.settings, self.client)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def api(self) -> Api:
        """A client for the web app."""
        return Api(f"http://127.0.0.1:{self.port}")

    def start_web(self) -> None:
        """Serve the app on ``port`` from a thread of its own."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = create_app(self.settings, self.runtime.database, self.runtime.broker,
                             redis_client(self.settings.redis_url), self.clock)
            self._runner = web.AppRunner(app, access_log=None, **server_options(self.settings))
            await self._runner.setup()
            await LaneSite(self._runner, listen("127.0.0.1", self.port)).start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        thread = threading.Thread(target=run, name="inprocess-web", daemon=True)
        thread.start()
        if not ready.wait(20):
            raise RuntimeError("the in-process web app did not start")
        self.procs["web"] = thread

    def start_worker(self, name: str = "worker", processes: int = 1, threads: int = 8) -> None:
        """Dramatiq worker threads on the stack's broker."""
        worker = dramatiq.Worker(self.runtime.broker, worker_threads=processes * threads,
                                 worker_timeout=50)
        bootstrap.start_worker(worker)  # (a stop right after a bare start can hang)
        self.procs[name] = worker

    def kill(self, name: str, sig: int = 0) -> None:
        """Stop a worker (it finishes what it holds; the rest stays queued).

        A thread still running after ``STOP_SECONDS`` is left behind (Dramatiq's threads
        are daemons) with a warning that carries its stack: where it was stuck shows in
        the run's warnings summary, instead of the stop waiting Dramatiq's ten minutes.
        """
        worker = self.procs.pop(name)
        worker.stop(timeout=int(STOP_SECONDS * 1000))
        stuck = [t for t in (*worker.workers, *worker.consumers.values()) if t.is_alive()]
        if stuck:
            frames = sys._current_frames()
            stacks = "\n".join(f"{t.name} (running={getattr(t, 'running', '?')}):\n"
                               + "".join(traceback.format_stack(frames[t.ident]))
                               for t in stuck if t.ident in frames)
            warnings.warn(f"{len(stuck)} worker thread(s) still running {STOP_SECONDS:.0f} s "
                          f"after stop:\n{stacks}", stacklevel=2)

    def stop(self) -> None:
        """Stop the workers and the web app."""
        for name in [n for n in self.procs if n != "web"]:
            self.kill(name)
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(20)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.procs.pop("web").join(10)
        self.runtime.database.close_all()
        self.client.close()
        if self._outer_database is not None:
            database.initialize(self._outer_database)
