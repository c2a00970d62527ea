"""The fast lane: the waiting room's position poll and token issue answered straight off
the socket, without aiohttp's request and response objects. Every other request, and
anything unusual about these two, goes to aiohttp unchanged.

Why: at 64 connections the waiting room's p99 is set by how many answers one process
gives a second, and about half of a poll's CPU in aiohttp was aiohttp's own (its parser,
request, response and writer objects), not the poll's.

What the lane takes, at the start of a connection's unanswered bytes:

- a request line that is exactly one of the lane's (``GET /api/v1/queue/tokens/me
  HTTP/1.1``, ``POST /api/v1/queue/tokens HTTP/1.1``): no query, no other version;
- a request that arrived whole: its head and its ``Content-Length`` body are in the bytes
  at hand (a client that sends a request in pieces is a slow one: aiohttp times it);
- a head of at most 8,190 bytes that httptools (llhttp, the parser aiohttp itself is
  built on) parses without complaint, with a ``Host``, at most 64 headers, each once,
  in ASCII, and each of the ordinary kinds browsers, HTTP libraries and proxies send
  (``_ORDINARY``: no ``Transfer-Encoding``, ``Content-Encoding``, ``Expect``,
  ``Upgrade``...); a body no larger than ``max_body_bytes``, and none on a ``GET``.

Anything else hands the connection to aiohttp, with the bytes not yet answered, for
good: aiohttp answers them as it always did (its limits, its errors, its timeouts).
A connection's requests are answered in order, one at a time; once more than 64 KiB
is unanswered (so at most that and one read, up to 256 KiB), or while the client does
not read its answers, the connection is not read; idle for
``CLIENT_TIMEOUT`` it is closed, as aiohttp's keep-alive timeout does. The lane's
answers are the routes' own (a ``Route`` names its ``lane`` handler beside its aiohttp
one): the same handlers' code (``web.views.concerts``), the same
error shapes (``web.responses.failure_response``), the same headers aiohttp writes,
counted in the same HTTP metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay

from web.metrics import HTTP_METRICS
from web.responses import encode_json, failure_response
from web.routing import API, Route

Answer = tuple[int, Any]  # (status, a JSON body)
Handler = Callable[[web.Application, dict[str, str], bytes], Awaitable[Answer]]

# The headers a request the lane answers may carry: what browsers, HTTP libraries and
# proxies send with an API call. Any other (``Transfer-Encoding``, ``Content-Encoding``,
# ``Expect``, ``Upgrade``, a WebSocket's...) is aiohttp's to judge.
_ORDINARY = frozenset({
    "host", "authorization", "queue-token", "content-type", "content-length",
    "connection", "keep-alive", "user-agent", "accept", "accept-encoding",
    "accept-language", "accept-charset", "cache-control", "pragma", "origin", "referer",
    "cookie", "dnt", "priority", "x-request-id", "x-forwarded-for", "x-forwarded-proto",
    "x-forwarded-host", "x-real-ip", "forwarded", "via", "traceparent", "tracestate",
})
_ORDINARY_PREFIXES = ("sec-fetch-", "sec-ch-")
_MAX_HEADERS = 64  # (aiohttp refuses more than 128)
_HEAD_LIMIT = 8190  # a longer head is aiohttp's to judge (its line limit)
_BUFFERED = 64 * 1024  # unanswered bytes past which a connection is not read


@dataclass(frozen=True)
class LaneRoute:
    """A route the lane answers: ``handler(app, headers, body)`` (header names in lower
    case) returns ``(status, body)``; it raises as an aiohttp handler would."""

    method: str
    path: str  # under /api/v1, as the route's ``Route``
    handler: Handler

    @property
    def url(self) -> str:
        """The full path, as HTTP metrics name the route."""
        return f"{API}{self.path}"

    @property
    def request_line(self) -> bytes:
        """The one request line the lane takes for it."""
        return f"{self.method} {self.url} HTTP/1.1\r\n".encode()


@dataclass
class Request:
    """One whole request the lane took."""

    route: LaneRoute
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _Head:
    """httptools' callbacks for one request: its headers, and whether it looks usual."""

    __slots__ = ("complete", "headers", "keep_alive", "parser", "usual")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.usual = True
        self.complete = self.keep_alive = False
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("ascii", "replace").lower()
        if key in self.headers or not value.isascii() or len(self.headers) >= _MAX_HEADERS \
                or not (key in _ORDINARY or key.startswith(_ORDINARY_PREFIXES)):
            self.usual = False
        self.headers[key] = value.decode("ascii", "replace").rstrip(" \t")  # (as aiohttp)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]
        # (asked now: once the message is complete the parser forgets)


class Lane:
    """The lane of one web process: its routes, its connections, its clock for ``Date``."""

    def __init__(self, app: web.Application, routes: list[Route], max_body: int,
                 idle_timeout: float) -> None:
        """The lane for those of ``routes`` that declare a ``lane`` handler."""
        self.app = app
        lanes = [LaneRoute(r.method, r.path, r.lane) for r in routes if r.lane is not None]
        assert not any(r.root for r in routes if r.lane is not None), "a lane is under /api/v1"
        self.routes = {route.request_line: route for route in lanes}
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections: set[LaneProtocol] = set()
        self.answered = 0  # requests the lane answered
        self.handed_over = 0  # connections it handed to aiohttp
        self._date_at, self._date = 0, b""

    def take(self, data: bytes | bytearray) -> tuple[Request, int] | None:
        """The request at the start of ``data`` and its length in bytes, if the lane
        takes it (see the module's docstring); else None."""
        end = data.find(b"\r\n\r\n", 0, _HEAD_LIMIT)
        if end < 0:
            return None
        route = self.routes.get(bytes(data[:data.find(b"\r\n") + 2]))
        if route is None:
            return None
        head = _Head()
        parser = head.parser
        size = end + 4
        try:
            parser.feed_data(bytes(data[:size]))
            if not head.usual or "host" not in head.headers:
                return None
            length = head.headers.get("content-length", "0")
            if not length.isdigit() or int(length) > self.max_body \
                    or (length != "0" and route.method == "GET"):
                return None
            body = bytes(data[size:size + int(length)])
            if len(body) < int(length):
                return None
            if body:
                parser.feed_data(body)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        finally:
            head.parser = None  # (head and parser refer to each other: left to the cyclic
            # collector, a request's pair made its young-generation passes take 15-33 ms)
        if not head.complete:
            return None
        return Request(route, head.headers, body, head.keep_alive), size + len(body)

    async def answer(self, request: Request) -> bytes:
        """The whole HTTP response to ``request``, counted in the HTTP metrics."""
        started = time.perf_counter()
        route = request.route
        try:
            status, data = await route.handler(self.app, request.headers, request.body)
            body, extra = encode_json(data), b""
        except Exception as e:  # (answered as the error middleware would)
            response = failure_response(e, route.url)
            status, body = response.status, response.body
            extra = b"".join(f"{name}: {value}\r\n".encode()
                             for name, value in response.headers.items()
                             if name != "Content-Type")
        self.answered += 1
        self.app[HTTP_METRICS].observe(route.method, route.url, status,
                                       time.perf_counter() - started)
        return b"".join((
            _status_line(status),
            b"Content-Type: application/json; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(body), self.date(), extra,
            b"" if request.keep_alive else b"Connection: close\r\n", b"\r\n", body))

    def date(self) -> bytes:
        """The ``Date`` and ``Server`` headers, as aiohttp writes them (remade each second)."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = (f"Date: {formatdate(now, usegmt=True)}\r\n"
                          f"Server: {SERVER_SOFTWARE}\r\n").encode()
        return self._date

    def close(self) -> None:
        """Close every connection once its answer in hand is written."""
        for connection in list(self.connections):
            connection.close()


class LaneProtocol(asyncio.Protocol):
    """One connection: the lane answers what it takes, and hands the rest to aiohttp's
    own protocol (``server()``, an aiohttp ``RequestHandler``)."""

    def __init__(self, lane: Lane, server: web.Server) -> None:
        self.lane, self.server = lane, server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # what came and is not answered yet
        self.busy = False  # an answer is being made: the next request waits
        self.closing = False  # close once the answer in hand is written
        self.eof = False  # the client sent all it will: answer what came, then close
        self.paused = False  # the client reads too slowly: answer nothing more until it does
        self.reading = True
        self.task: asyncio.Task | None = None  # the answer being made
        self.last = 0.0  # when the connection last finished something (the idle clock)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A new connection starts in the lane (TCP options as aiohttp's own)."""
        self.transport = transport  # type: ignore[assignment]
        tcp_nodelay(transport, True)  # type: ignore[arg-type]
        tcp_keepalive(transport)  # type: ignore[arg-type]
        self.lane.connections.add(self)
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_at(self.last + self.lane.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: an answer in hand is dropped."""
        self.lane.connections.discard(self)
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        """Answer what came, in order; past 64 KiB unanswered, read no more."""
        self.buffer += data
        if not self.busy:
            self._next()
        if len(self.buffer) > _BUFFERED:
            self._reading(False)

    def eof_received(self) -> bool:
        """The client sent all it will: answer what came (the transport stays open for
        that), then close."""
        self.eof = True
        return self.busy or bool(self.buffer)

    def pause_writing(self) -> None:
        """The client reads too slowly: take no new request, and read no more."""
        self.paused = True
        self._reading(False)

    def resume_writing(self) -> None:
        """The client caught up: go on."""
        self.paused = False
        self._next()

    def close(self) -> None:
        """Close now, or once the answer in hand is written."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _idle(self) -> None:
        """aiohttp's keep-alive timeout: close a connection that has had nothing to do
        for ``idle_timeout`` seconds (one timer a connection, moved on as it works)."""
        self.timer = None
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        due = self.last + self.lane.idle_timeout
        if self.busy or self.paused or self.buffer:
            due = loop.time() + self.lane.idle_timeout
        elif loop.time() >= due:
            self.transport.close()
            return
        self.timer = loop.call_at(due, self._idle)

    def _reading(self, on: bool) -> None:
        if on != self.reading and self.transport is not None:
            self.reading = on
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _next(self) -> None:
        """Start answering the next whole request, or hand the connection over."""
        if self.transport is None or self.busy or self.paused:
            return
        if not self.buffer:
            if self.eof:
                self.transport.close()
            else:
                self._reading(True)
            return
        taken = self.lane.take(self.buffer)
        if taken is None:
            self._hand_over()
            return
        request, size = taken
        del self.buffer[:size]
        self.busy = True
        if len(self.buffer) <= _BUFFERED:
            self._reading(True)
        self.task = asyncio.get_running_loop().create_task(self._answer(request))

    async def _answer(self, request: Request) -> None:
        try:
            response = await self.lane.answer(request)
        except BaseException:  # (it answers every handler's error: a bug, or a shutdown)
            if self.transport is not None:
                self.transport.close()
            raise
        transport = self.transport
        if transport is None:  # the client left
            return
        transport.write(response)
        self.busy = False
        self.last = asyncio.get_running_loop().time()
        if self.closing or not request.keep_alive:
            transport.close()
            return
        self._next()

    def _hand_over(self) -> None:
        """aiohttp takes the connection from here, with the bytes not yet answered."""
        transport, data = self.transport, bytes(self.buffer)
        assert transport is not None
        self.lane.connections.discard(self)
        self.lane.handed_over += 1
        if self.timer is not None:
            self.timer.cancel()
        self.transport, self.buffer = None, bytearray()
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if not self.reading:
            transport.resume_reading()
        handler.data_received(data)
        if self.eof:  # (it came before these bytes were handed over)
            handler.eof_received()


@functools.cache
def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()


LANE = web.AppKey("fast_lane", Lane)


class LaneSite(web.SockSite):
    """aiohttp's ``SockSite``, its connections opened by the lane's protocol."""

    async def start(self) -> None:
        """Listen; every new connection starts in the lane."""
        await web.BaseSite.start(self)
        lane, server = self._runner.app[LANE], self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: LaneProtocol(lane, server),
                                                sock=self._sock, backlog=self._backlog)

    async def stop(self) -> None:
        """Stop listening, then close the lane's connections (aiohttp closes its own)."""
        await super().stop()
        self._runner.app[LANE].close()


def run(app: web.Application, sock: socket.socket, *, backlog: int,
        loop: asyncio.AbstractEventLoop | None = None, **options: Any) -> None:
    """Serve ``app`` on ``sock`` through the lane until SIGTERM or SIGINT, as aiohttp's
    ``run_app`` does: the same runner, graceful shutdown and clean-up; ``options`` are the
    runner's (``server_options``)."""
    loop = loop or asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=True, **options)

    async def serve() -> None:
        await runner.setup()
        try:
            await LaneSite(runner, sock, backlog=backlog).start()
            await asyncio.Future()  # until a signal ends it (GracefulExit)
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
