"""An open-loop HTTP/1.1 load generator that costs the machine little.

The steady-latency phase sends requests at a fixed rate whatever the answers' pace. It
used aiohttp's client, which spent 0.19 ms of CPU per request: at 1,200 requests/s, a
fifth of one of the machine's two cores, more than the door it was measuring. Here each
request is bytes prepared in advance, written on one of a fixed set of keep-alive
connections (asyncio protocols, no client library), and an answer is read only as far
as its status line and ``Content-Length``.

A request that is due while every connection is busy waits for the first to free up;
its latency still counts from when it was due (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, deque

_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def post_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one keep-alive POST."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0  # when the request in flight was due
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, due: float) -> None:
        self.due, self.busy = due, True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        found = _LENGTH.search(self.buffer, 0, end + 2)
        if found is None:
            raise RuntimeError("an answer without Content-Length")
        if len(self.buffer) < end + 4 + int(found.group(1)):
            return
        status = int(self.buffer[9:12])
        self.buffer.clear()  # (one request in flight: nothing follows its answer)
        self.busy = False
        self.pacer.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pacer.lost(self, exc)


class Pacer:
    """Sends ``requests`` (round robin) at ``rate`` per second over ``connections``."""

    def __init__(self, requests: list[bytes], rate: float, connections: int = 64) -> None:
        self.requests = requests
        self.rate = rate
        self.connections = connections
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []  # seconds, from when each request was due
        self.sent = 0
        self._idle: deque[_Connection] = deque()
        self._backlog: deque[float] = deque()  # due times of requests not yet written
        self._open: set[_Connection] = set()
        self._finished: asyncio.Future | None = None  # set once sending has stopped

    async def run(self, host: str, port: int, seconds: float) -> None:
        """Send for ``seconds``, then wait for every answer."""
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, connection = await loop.create_connection(lambda: _Connection(self), host, port)
            self._open.add(connection)
            self._idle.append(connection)
        began, due = loop.time(), 0
        while (elapsed := loop.time() - began) < seconds and self._open:
            while due <= elapsed * self.rate:
                self._backlog.append(began + due / self.rate)
                due += 1
            self._dispatch()
            await asyncio.sleep(max(0.0005, began + due / self.rate - loop.time()))
        self._finished = loop.create_future()
        self._check_finished()
        try:
            await self._finished
        finally:
            for connection in list(self._open):
                connection.transport.close()

    def _dispatch(self) -> None:
        while self._backlog and self._idle:
            self._send(self._idle.popleft(), self._backlog.popleft())

    def _send(self, connection: _Connection, due: float) -> None:
        connection.send(self.requests[self.sent % len(self.requests)], due)
        self.sent += 1

    def answered(self, connection: _Connection, status: int) -> None:
        """Count the answer; give the connection the next waiting request."""
        loop = asyncio.get_running_loop()
        self.statuses[status] += 1
        self.latencies.append(loop.time() - connection.due)
        if self._backlog:
            self._send(connection, self._backlog.popleft())
            return
        self._idle.append(connection)
        self._check_finished()

    def _check_finished(self) -> None:
        if self._finished is None or self._finished.done():
            return
        if not self._open:
            self._finished.set_exception(ConnectionError("the server closed every connection"))
        elif not self._backlog and not any(connection.busy for connection in self._open):
            self._finished.set_result(None)

    def lost(self, connection: _Connection, exc: Exception | None) -> None:
        """A connection that closed: a request in flight on it counts as status 0."""
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        if connection.busy:
            connection.busy = False
            self.statuses[0] += 1
        self._check_finished()
