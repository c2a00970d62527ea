"""Running peewee (synchronous) off the event loop, on a bounded thread pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import peewee

from db.connection import TRANSIENT_ERRORS

T = TypeVar("T")
log = logging.getLogger(__name__)


class DbExecutor:
    """Call ``await db(fn, *args)``: ``fn`` runs on a pool thread with a pooled connection."""

    def __init__(self, database: peewee.Database, threads: int) -> None:
        self.database = database
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside a connection context, off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(self._run, fn, args, kwargs))

    def _run(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        try:
            with self.database.connection_context():
                return fn(*args, **kwargs)
        except TRANSIENT_ERRORS:
            # A lost connection usually means the server dropped them all (a restart):
            # discard the idle ones too, so only the calls in flight see the fault.
            close_idle = getattr(self.database, "close_idle", None)
            if close_idle:
                close_idle()
            raise

    async def warm(self, connections: int, also: Callable[[], Any] | None = None) -> None:
        """Open ``connections`` pooled connections at once (and call ``also``, say a
        broker's ping, on each of their threads), before the process serves.

        Otherwise the first batches after a start each open one while every command in
        them waits: a fresh process under load answered its first 64 commands in
        80-130 ms instead of about 12. A failure is only logged: the first calls open
        their connections, or fail, as they would without this."""
        connections = min(connections, self.threads)
        together = threading.Barrier(connections, timeout=5)

        def hold() -> None:  # (until all hold one, so that each opens its own)
            try:
                self.database.execute_sql("SELECT 1")
                if also is not None:
                    also()
            except Exception:
                together.abort()  # (the others stop waiting)
                raise
            together.wait()

        outcomes = await asyncio.gather(*(self(hold) for _ in range(connections)),
                                        return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            log.warning("could not open connections before serving: %r", failed[0])

    def close(self) -> None:
        """Stop the pool threads and close pooled connections."""
        self.pool.shutdown(wait=True)
        close_all = getattr(self.database, "close_all", None)
        if close_all:
            close_all()
