"""The aiohttp application factory: every domain's routes, the command doors, the hub."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import dramatiq
import hiredis
import peewee
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from db.settings import Settings
from jobs.clock import Clock
from jobs.platform import DOMAINS, REGISTRY, load_domains
from web import openapi
from web.auth import TOKENS, Tokens
from web.commands import (
    BATCHES_IN_FLIGHT,
    DB,
    GATEWAY,
    HUB,
    STREAMS,
    JobGateway,
    command_route,
)
from web.db import DbExecutor
from web.fastlane import LANE, Lane
from web.hub import LiveHub
from web.metrics import HTTP_METRICS, HttpMetrics, metrics_middleware
from web.phone import PHONE_CODES, PhoneCodes
from web.responses import error_middleware, json_response, quiet_protocol_errors
from web.routing import Route, add_routes
from web.schema import BODY_RULES, BodyRules
from web.sms import SmsSender, load_sender
from web.sse import Streams
from web.views import concerts, pages, shop
from web.views.ops import JOB_METRICS, REDIS
from web.views.users import LIMITS, SETTINGS
from workers.bootstrap import make_waiting_room
from workers.coupon_gate import CouponGate
from workers.limits import Limits
from workers.rankings import BestSellerCache
from workers.waiting_room import TurnRoom

log = logging.getLogger(__name__)
OPENAPI = web.AppKey("openapi", dict)
REPLY_TIMEOUT = 5.0  # seconds for one exchange with Redis (redis-py's own socket timeout)


class BoundedPool(aioredis.ConnectionPool):
    """A connection pool that makes a burst wait for a free connection instead of failing.

    redis-py's ``BlockingConnectionPool`` does the same with a condition variable and a
    timeout on every checkout; a semaphore costs a fifth less CPU per command.
    """

    def __init__(self, *args: Any, limit: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(limit)
        self._holders: set[Any] = set()  # connections handed out, each holding a slot

    async def get_connection(self, *args: Any, **kwargs: Any):
        """A connection, once one of the ``limit`` slots is free."""
        await self._slots.acquire()
        try:
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:  # (redis-py has released the connection: not its slot)
            self._slots.release()
            raise
        self._holders.add(connection)
        return connection

    async def release(self, connection) -> None:
        """Give the connection back, and its slot if it held one."""
        try:
            await super().release(connection)
        finally:
            if connection in self._holders:
                self._holders.discard(connection)
                self._slots.release()


def pack(encoder: Any, args: tuple) -> bytes:
    """One command in the Redis protocol, packed by hiredis (C).

    redis-py's asyncio connection packs in Python, a tenth of a web request's CPU at the
    waiting room's rate. hiredis takes str, bytes, int and float (formatted as redis-py
    formats them); anything else goes through redis-py's encoder first, which raises
    redis-py's own error for what it refuses.
    """
    name = args[0]
    if isinstance(name, str) and " " in name:  # ("SCRIPT LOAD": two words on the wire)
        args = (*name.split(), *args[1:])
    try:
        return hiredis.pack_command(args)
    except (TypeError, UnicodeError):
        return hiredis.pack_command(tuple(bytes(encoder.encode(arg)) for arg in args))


class PipeliningRedis(aioredis.Redis):
    """An asyncio Redis client that sends the commands of one event-loop turn together.

    Every command awaited by any request in the same turn of the loop goes out in one
    write on one connection, and its replies are read in one pass, where each command
    alone would pay a round trip and redis-py's per-command handling. A command's reply
    or error reaches its own caller; one failing command fails no other. A dropped
    connection fails its batch's callers (retried only as far as the connection's
    ``Retry`` allows, as redis-py's own pipeline does; none by default). Pipelines and
    pub/sub keep their own connections. No command of the web process blocks in Redis
    (nothing here may).

    A batch has one deadline, ``reply_timeout``, for its connection, its write and all its
    replies. redis-py would arm a timer for the write and one more for each reply (5 us
    each under uvloop, and a task for the write): 5 % of a waiting-room poll's CPU and
    15 % of a token issue's. So the pool's connections carry no socket timeout of their
    own (see :func:`redis_client`), and :meth:`pipeline` gives a pipeline the deadline.
    """

    def __init__(self, *args: Any, max_batch: int = 256,
                 reply_timeout: float = REPLY_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[tuple[tuple, dict, asyncio.Future]] = []
        self._max_batch = max_batch
        self.reply_timeout = reply_timeout
        self._sending: set[asyncio.Task] = set()

    def register_script(self, script: str | bytes) -> BatchedScript:
        """A Lua script whose calls join this client's batches (see :class:`BatchedScript`)."""
        return BatchedScript(self, script)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
        """A redis-py pipeline whose ``execute`` has this client's deadline."""
        return DeadlinePipeline(self.connection_pool, self.response_callbacks, transaction,
                                shard_hint, reply_timeout=self.reply_timeout)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue the command for this turn's batch and wait for its own reply."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._queued.append((args, options, reply))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)  # once this turn's other callers have queued
        elif len(self._queued) >= self._max_batch:
            self._flush()
        return await reply

    def _flush(self) -> None:
        if self._queued:
            task = asyncio.get_running_loop().create_task(self._send(self._queued))
            self._queued = []
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple, dict, asyncio.Future]]) -> None:
        pool = self.connection_pool
        encoder = pool.get_encoder()
        packed: list[bytes] = []
        sent: list[tuple[tuple, dict, asyncio.Future]] = []
        for command in batch:
            try:
                packed.append(pack(encoder, command[0]))
            except Exception as e:  # (an argument Redis cannot take: its caller's error)
                if not command[2].done():
                    command[2].set_exception(e)
            else:
                sent.append(command)
        if not sent:
            return
        wire = b"".join(packed)
        connection = None
        try:
            async with deadline(self.reply_timeout):  # (a new connection's handshake too)
                connection = await pool.get_connection()
                replies = await connection.retry.call_with_retry(
                    lambda: self._exchange(connection, wire, sent),
                    lambda _error: connection.disconnect())
        except BaseException as e:  # the connection failed: every caller sees it
            if connection is not None and isinstance(e, Exception):
                await connection.disconnect()  # (replies may be left unread on it)
            for *_, reply in sent:
                if reply.done():
                    continue
                if isinstance(e, Exception):
                    reply.set_exception(e)
                else:  # (the send itself was cancelled: the loop is shutting down)
                    reply.cancel()
            if not isinstance(e, Exception):
                raise
            return
        finally:
            if connection is not None:
                await pool.release(connection)
        for (*_, reply), value in zip(sent, replies, strict=True):
            if reply.done():  # (its caller has gone)
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)

    async def _exchange(self, connection: Any, wire: bytes,
                        sent: list[tuple[tuple, dict, asyncio.Future]]) -> list[Any]:
        """Write the batch, then read one reply (or error) per command, in order."""
        await connection.send_packed_command(wire, check_health=False)
        replies: list[Any] = []
        for args, options, _ in sent:
            try:
                replies.append(await self.parse_response(connection, args[0], **options))
            except redis.exceptions.ResponseError as e:
                replies.append(e)
        return replies


class BatchedScript(AsyncScript):
    """A registered script called with ``EVALSHA`` straight through its client's batch.

    redis-py's ``AsyncScript`` checks on every call whether the client is a pipeline, an
    ``isinstance`` against a class built on ``typing.Protocol`` (and an import): a tenth
    of the waiting room's Redis cost per request. A script still reloads itself once after
    Redis lost it (``NOSCRIPT``), and a call with another ``client`` (a pipeline) goes
    through redis-py's own code.
    """

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        """Run the script: ``EVALSHA sha len(keys) *keys *args``."""
        if client is not None:
            return await super().__call__(keys, args, client)
        keys, args, redis_ = keys or (), args or (), self.registered_client
        try:
            return await redis_.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # (Redis restarted, or its scripts flushed)
            self.sha = await redis_.script_load(self.script)
            return await redis_.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class DeadlinePipeline(aioredis.client.Pipeline):
    """A pipeline on :class:`PipeliningRedis`'s connections, which have no socket timeout:
    its whole ``execute`` has one deadline instead."""

    def __init__(self, *args: Any, reply_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reply_timeout = reply_timeout

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run the queued commands (a cut-off exchange drops its connection)."""
        async with deadline(self.reply_timeout):
            return await super().execute(raise_on_error)


@contextlib.asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` that raises redis-py's ``TimeoutError``, as a socket timeout
    would (the door answers it with 503). redis-py drops a connection whose read or write
    was cut off, so no late reply is left on it for the next caller."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise redis.exceptions.TimeoutError(
            f"Redis did not answer within {seconds:g} s") from None


def redis_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client that pipelines each loop turn's commands, on a bounded
    pool that makes bursts wait instead of failing."""
    # (no client name and version: redis-py would read its version from the package
    # metadata for every new connection, and send it in two more commands; no socket
    # timeout: each exchange has its own deadline)
    pool = BoundedPool.from_url(url, limit=max_connections, lib_name=None, lib_version=None,
                                socket_timeout=None, socket_connect_timeout=REPLY_TIMEOUT)
    return PipeliningRedis(connection_pool=pool)


def hub_client(url: str, name: str = "bazaar-hub") -> aioredis.Redis:
    """The hub's own connection: no silent retries, so a drop is seen and replayed."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), client_name=name)


def domain_routes() -> list[Route]:
    """Every route: each domain's web module's ``ROUTES``, and a door per command."""
    load_domains()
    routes: list[Route] = []
    doors: dict = {}
    for name, domain in REGISTRY.domains.items():
        try:
            module = importlib.import_module(f"web.views.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"web.views.{name}":
                raise
            module = None
        routes += [replace(r, tag=name) for r in getattr(module, "ROUTES", [])]
        doors |= getattr(module, "DOORS", {})
        routes += [replace(command_route(c, doors.get(c.type)), tag=name)
                   for c in domain.commands]
    return routes


def server_options(settings: Settings) -> dict:
    """aiohttp server options (``AppRunner(app, **server_options(settings))``): a
    connection that has not sent complete headers within ``client_timeout`` seconds is
    closed (the idle timer runs from the connection's start until a request is parsed),
    and after an answer to a request whose body was not read whole (a 413, a stalled
    body's 408) the rest is drained for at most a second, not aiohttp's ten."""
    return {"keepalive_timeout": settings.client_timeout, "lingering_time": 1.0}


def app_routes() -> list[Route]:
    """Every route the app serves (and the OpenAPI describes)."""
    return [*domain_routes(),
            Route("GET", "/openapi.json", openapi_json, "This description", auth="none",
                  tag="system"),
            *[replace(r, tag="system") for r in pages.ROUTES]]


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``."""
    return json_response(request.app[OPENAPI])


def create_app(
    settings: Settings,
    database: peewee.Database,
    broker: dramatiq.Broker,
    client: aioredis.Redis,
    clock: Clock | None = None,
    sms: SmsSender | None = None,
    live: aioredis.Redis | None = None,
) -> web.Application:
    """Build the web application on already-created connections and broker.

    ``live`` is the hub's Redis connection (by default one of its own for ``REDIS_URL``).
    """
    quiet_protocol_errors()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware],
    )
    db = DbExecutor(database, settings.db_pool_size)
    if live is None:
        live = hub_client(settings.redis_url) if settings.redis_url else client
    hub = LiveHub(live, settings.redis_prefix)
    gateway = JobGateway(db, broker, client, hub, settings.redis_prefix, clock or Clock())
    streams = Streams()
    app[SETTINGS] = settings
    app[BODY_RULES] = BodyRules(settings.max_body_bytes, settings.client_timeout)
    app[DB] = db
    app[REDIS] = client
    app[JOB_METRICS] = gateway.metrics
    app[HUB] = hub
    app[STREAMS] = streams
    app[GATEWAY] = gateway
    app[HTTP_METRICS] = HttpMetrics()
    app[TOKENS] = Tokens(settings.jwt_secret, settings.access_token_ttl,
                         settings.refresh_token_ttl, client, settings.redis_prefix, db)
    app[PHONE_CODES] = PhoneCodes(
        client, settings.redis_prefix, sms or load_sender(settings.sms_sender),
        settings.phone_code_ttl, settings.phone_code_max_tries,
    )
    app[LIMITS] = Limits.from_settings(client, settings, clock)
    app[concerts.ROOM] = make_waiting_room(client, settings)
    app[concerts.TURN_ROOM] = TurnRoom(app[concerts.ROOM])
    app[shop.COUPON_GATE] = CouponGate(client, settings.redis_prefix)
    app[shop.GATE_READS] = {}
    app[shop.BEST_SELLERS] = BestSellerCache(client, settings.redis_prefix)
    routes = app_routes()
    add_routes(app, routes)
    app[LANE] = Lane(app, routes, settings.max_body_bytes, settings.client_timeout)
    app[OPENAPI] = openapi.build(routes)
    app[pages.REFERENCE] = pages.ApiReference(app[OPENAPI])

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # the connections the door's first batches write on, open before it serves
        await db.warm(BATCHES_IN_FLIGHT + 1, getattr(getattr(broker, "client", None),
                                                       "ping", None))
        await hub.start()
        await app[TOKENS].follow(hub)
        await gateway.start()
        yield
        await gateway.stop()
        await hub.stop()
        db.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(streams.close_all)
    return app


__all__ = ["DOMAINS", "create_app", "redis_client"]
