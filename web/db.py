"""Running peewee (synchronous) off the event loop, on a bounded thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import peewee

from db.connection import TRANSIENT_ERRORS

T = TypeVar("T")


class DbExecutor:
    """Call ``await db(fn, *args)``: ``fn`` runs on a pool thread with a pooled connection."""

    def __init__(self, database: peewee.Database, threads: int) -> None:
        self.database = database
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

    def close(self) -> None:
        """Stop the pool threads and close pooled connections."""
        self.pool.shutdown(wait=True)
        close_all = getattr(self.database, "close_all", None)
        if close_all:
            close_all()
