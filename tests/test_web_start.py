"""A web process's start: the connections it opens before it serves, and the port it
listens on only then."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid

import pytest

from db.connection import make_database
from web.db import DbExecutor
from web.listener import PortInUse, listen


def connections_named(database, name: str) -> int:
    return database.execute_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchone()[0]


def test_warming_opens_the_connections_at_once_and_calls_also_on_each(database_url, database):
    name = f"warm-{uuid.uuid4().hex[:8]}"
    executor = DbExecutor(make_database(f"{database_url}?application_name={name}", 16), 16)
    pinged: list[str] = []
    try:
        # When the executor warms five connections, with a ping on each one's thread
        asyncio.run(executor.warm(5, lambda: pinged.append(threading.current_thread().name)))
        # Then five connections are open (idle in the pool), each opened on its own thread
        assert connections_named(database, name) == 5
        assert len(pinged) == len(set(pinged)) == 5
    finally:
        executor.close()
    deadline = time.monotonic() + 5  # (a backend leaves pg_stat_activity just after)
    while connections_named(database, name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connections_named(database, name) == 0


def test_warming_opens_no_more_connections_than_the_executor_has_threads(database_url,
                                                                         database):
    name = f"warm-{uuid.uuid4().hex[:8]}"
    executor = DbExecutor(make_database(f"{database_url}?application_name={name}", 16), 2)
    try:
        asyncio.run(executor.warm(5))
        assert connections_named(database, name) == 2
    finally:
        executor.close()


def test_a_process_whose_database_is_down_still_starts_at_once(caplog):
    with socket.socket() as closed:  # (a port with nothing listening on it)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    executor = DbExecutor(make_database(f"postgresql://root@127.0.0.1:{port}/none", 4), 4)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="web.db"):
        asyncio.run(executor.warm(4))
    executor.close()
    # Then the warm-up gave up at once (no waiting out the barrier's 5 s) and said why
    assert time.monotonic() - started < 2
    assert "could not open connections before serving" in caplog.text


def test_a_bound_socket_takes_no_connection_until_it_listens():
    sock = listen("127.0.0.1", 0, listening=False)
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sock.listen(16)  # (what asyncio's create_server does once the app serves)
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        sock.close()


def test_a_taken_port_is_reported_before_the_socket_listens():
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(PortInUse):  # (as ``bazaar web`` binds it)
            listen("127.0.0.1", taken.getsockname()[1], reuse_port=True, listening=False)
    finally:
        taken.close()
