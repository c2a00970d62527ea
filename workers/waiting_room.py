"""The waiting room in front of each concert, in Redis.

Per concert: ``waiting`` (a sorted set by arrival number, so a position is a rank:
distinct and gap-free), ``active`` (by ``active_until``), ``seen`` (last poll of each
waiting user), ``tokens`` (user -> the one token they hold) and ``promotions`` (recent
promotion times, to measure the rate the wait estimate uses). Every operation is one
Lua script, so concurrent joins and the scheduler's promotion never interleave.

Reads (``status``) never move anyone: they only record that a waiting user is still
polling. Promotion, expiry of active users and removal of idle waiting users happen in
:meth:`WaitingRoom.promote`, which only the scheduler runs.

(A Lua ``false`` inside a reply would cut it short, so "no value" is ``''``.)

Methods return the script's raw reply, or an awaitable of it when the client is
``redis.asyncio``; ``parse_*`` turns a reply into plain values. (``status`` and ``join``
are for a sync client; the web process goes through :class:`TurnRoom`, which sends a
turn's calls together.)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_JOINS = """
local limit, ttl, concert, idle = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if ARGV[5] == '0' and redis.call('SISMEMBER', KEYS[6], concert) == 0 then
  local replies = {}
  for i = 6, #ARGV, 3 do replies[#replies + 1] = {'NO_LINE'} end
  return replies
end
local function join(user, token, now)
  local held = redis.call('HGET', KEYS[4], user)
  if held then
    local active_until = redis.call('ZSCORE', KEYS[2], user)
    if active_until and tonumber(active_until) > now then
      return {held, 'ACTIVE', 0, active_until, 0}
    end
    local rank = redis.call('ZRANK', KEYS[1], user)
    local seen = tonumber(redis.call('ZSCORE', KEYS[3], user) or 0)
    if rank and seen >= now - idle then
      redis.call('ZADD', KEYS[3], now, user)
      return {held, 'WAITING', rank + 1, '', 0}
    end
    -- expired (active time over, or idle too long) but not swept yet: start afresh
    redis.call('ZREM', KEYS[1], user)
    redis.call('ZREM', KEYS[2], user)
  end
  redis.call('HSET', KEYS[4], user, token)
  redis.call('SADD', KEYS[6], concert)
  if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) < limit then
    local active_until = now + ttl
    redis.call('ZADD', KEYS[2], active_until, user)
    return {token, 'ACTIVE', 0, tostring(active_until), 1}
  end
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[5]), user)
  redis.call('ZADD', KEYS[3], now, user)
  return {token, 'WAITING', redis.call('ZRANK', KEYS[1], user) + 1, '', 1}
end
local replies = {}
for i = 6, #ARGV, 3 do
  replies[#replies + 1] = join(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))
end
return replies
"""

_STATUSES = """
local idle = tonumber(ARGV[1])
local function status(user, token, now, touch)
  if redis.call('HGET', KEYS[4], user) ~= token then return {'EXPIRED'} end
  local active_until = redis.call('ZSCORE', KEYS[2], user)
  if active_until then
    if tonumber(active_until) > now then return {'ACTIVE', 0, active_until} end
    return {'EXPIRED'}
  end
  local rank = redis.call('ZRANK', KEYS[1], user)
  local seen = redis.call('ZSCORE', KEYS[3], user)
  if not rank or (seen and tonumber(seen) < now - idle) then return {'EXPIRED'} end
  if touch == '1' then redis.call('ZADD', KEYS[3], now, user) end
  return {'WAITING', rank + 1, '', redis.call('ZCOUNT', KEYS[5], now - 60000, '+inf')}
end
local replies = {}
for i = 2, #ARGV, 4 do
  replies[#replies + 1] = status(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3])
end
return replies
"""

_PROMOTE = """
local now, limit, ttl, idle, batch =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ended = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
for _, user in ipairs(ended) do
  redis.call('ZREM', KEYS[2], user)
  redis.call('HDEL', KEYS[4], user)
end
local idle_users = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - idle, 'LIMIT', 0, batch)
for _, user in ipairs(idle_users) do
  redis.call('ZREM', KEYS[3], user)
  redis.call('ZREM', KEYS[1], user)
  redis.call('HDEL', KEYS[4], user)
end
local promoted = 0
local free = limit - redis.call('ZCARD', KEYS[2])
if free > 0 then
  local next_up = redis.call('ZPOPMIN', KEYS[1], math.min(free, batch))
  for i = 1, #next_up, 2 do
    redis.call('ZADD', KEYS[2], now + ttl, next_up[i])
    redis.call('ZREM', KEYS[3], next_up[i])
    redis.call('ZADD', KEYS[5], now, next_up[i] .. ':' .. now)
    promoted = promoted + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 60000)
return {promoted, #ended, #idle_users}
"""

_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""


_EPOCH = datetime(1970, 1, 1)  # (naive UTC, as every stored time)
_MS = timedelta(milliseconds=1)


def millis(now: datetime) -> int:
    """Naive-UTC datetime to unix milliseconds (exact: no float on the way)."""
    return (now - _EPOCH) // _MS


def from_millis(ms: Any) -> datetime:
    """Unix milliseconds to naive UTC."""
    return _EPOCH + timedelta(milliseconds=int(float(ms)))


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Place:
    """Where a token stands: ACTIVE (until ``active_until``), WAITING at ``position``, EXPIRED."""

    status: str
    position: int = 0
    active_until: datetime | None = None
    promoted_last_minute: int = 0
    token: str | None = None
    created: bool = False


class WaitingRoom:
    """The queues of every concert, under one key prefix."""

    def __init__(self, client: Any, prefix: str, active_limit: int, active_ttl: int,
                 idle_ttl: int) -> None:
        self.client = client
        self.prefix = prefix
        self.active_limit = active_limit
        self.active_ttl_ms = active_ttl * 1000
        self.idle_ttl_ms = idle_ttl * 1000
        self._joins = client.register_script(_JOINS)
        self._statuses = client.register_script(_STATUSES)
        self._promote = client.register_script(_PROMOTE)
        self._leave = client.register_script(_LEAVE)

    @property
    def concerts_key(self) -> str:
        """The set of concerts that have (had) a queue."""
        return f"{self.prefix}:queue:concerts"

    def keys(self, concert_id: int) -> list[str]:
        """waiting, active, seen, tokens, and the 5th: arrival counter or promotions."""
        base = f"{self.prefix}:queue:{concert_id}"
        return [f"{base}:waiting", f"{base}:active", f"{base}:seen", f"{base}:tokens"]

    def joins(self, concert_id: int, joins: list[tuple[int, str, datetime]],
              known: bool = True):
        """Queue each (user, token, now) of ``joins`` in turn, in one script call, or
        report the token a user already holds: one raw reply each (see
        :meth:`parse_join`).

        With ``known=False`` (the concert's existence is not checked yet), a concert
        that has no line yet is left alone: each reply says ``NO_LINE``, so the caller
        checks the concert and joins again, known.
        """
        keys = [*self.keys(concert_id), f"{self.prefix}:queue:{concert_id}:arrivals",
                self.concerts_key]
        args: list[Any] = [self.active_limit, self.active_ttl_ms, concert_id,
                           self.idle_ttl_ms, "1" if known else "0"]
        for user_id, token, now in joins:
            args += [user_id, token, millis(now)]
        return self._joins(keys=keys, args=args)

    def join(self, concert_id: int, user_id: int, token: str, now: datetime,
             known: bool = True):
        """:meth:`joins` for one user (a sync client; the web process joins through
        :class:`TurnRoom`)."""
        return self.joins(concert_id, [(user_id, token, now)], known)[0]

    @staticmethod
    def parse_join(reply: list) -> Place | None:
        """The reply of :meth:`join`: the place, or None for ``NO_LINE``."""
        if _text(reply[0]) == "NO_LINE":
            return None
        token, status, position, until, created = (_text(v) for v in reply)
        return Place(status, int(position), from_millis(until) if until else None,
                     token=token, created=bool(int(created)))

    def statuses(self, concert_id: int, reads: list[tuple[int, str, datetime, bool]]):
        """Where each token of ``reads`` (user, token, now, touch) stands, in one script
        call: one raw reply per read (see :meth:`parse_status`). ``touch`` records that a
        waiting user is still polling."""
        keys = [*self.keys(concert_id), f"{self.prefix}:queue:{concert_id}:promotions"]
        args: list[Any] = [self.idle_ttl_ms]
        for user_id, token, now, touch in reads:
            args += [user_id, token, millis(now), "1" if touch else "0"]
        return self._statuses(keys=keys, args=args)

    def status(self, concert_id: int, user_id: int, token: str, now: datetime,
               touch: bool = False):
        """Where ``token`` stands: :meth:`statuses` for one read (a sync client; the web
        process reads through :class:`TurnRoom`)."""
        return self.statuses(concert_id, [(user_id, token, now, touch)])[0]

    @staticmethod
    def parse_status(reply: list) -> Place:
        """The reply of :meth:`status`."""
        values = [_text(v) for v in reply]
        if values[0] == "EXPIRED":
            return Place("EXPIRED")
        if values[0] == "ACTIVE":
            return Place("ACTIVE", 0, from_millis(values[2]))
        return Place("WAITING", int(values[1]), None, int(values[3]))

    def estimated_wait(self, place: Place) -> int:
        """Seconds until a waiting place is promoted, from the last minute's promotion rate.

        With no promotion in the last minute, every active user is assumed to use their
        whole active time, the slowest the line can move.
        """
        if place.status != "WAITING":
            return 0
        if place.promoted_last_minute:
            return math.ceil(place.position * 60 / place.promoted_last_minute)
        batches = math.ceil(place.position / max(self.active_limit, 1))
        return batches * self.active_ttl_ms // 1000

    def promote(self, concert_id: int, now: datetime, batch: int = 1000):
        """Scheduler only: end expired actives, drop idle waiters, promote the head of line."""
        keys = [*self.keys(concert_id), f"{self.prefix}:queue:{concert_id}:promotions"]
        return self._promote(keys=keys, args=[millis(now), self.active_limit,
                                              self.active_ttl_ms, self.idle_ttl_ms, batch])

    def promote_all(self, now: datetime) -> int:
        """Scheduler only (sync client): :meth:`promote` every concert's line."""
        return sum(int(self.promote(int(concert_id), now)[0])
                   for concert_id in self.client.smembers(self.concerts_key))

    def leave(self, concert_id: int, user_id: int):
        """End a user's token for a concert (after they paid)."""
        return self._leave(keys=self.keys(concert_id), args=[user_id])


class TurnBatches:
    """Calls made in one event-loop turn with the same key, run as one call (asyncio).

    ``call(key, items)`` returns one reply per item, in order. Every caller gets its own
    reply; a failed call fails each of its callers, and a caller that gives up disturbs
    no other. A batch holds at most ``max_items``; more start the next one.
    """

    def __init__(self, call: Callable[[Hashable, list], Awaitable[list]],
                 max_items: int = 256) -> None:
        self.call = call
        self.max_items = max_items
        self._open: dict[Hashable, list[tuple[Any, asyncio.Future]]] = {}
        self._running: set[asyncio.Task] = set()

    async def add(self, key: Hashable, item: Any) -> Any:
        """``item``'s reply, from its turn's call for ``key``."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        batch = self._open.get(key)
        if batch is None or len(batch) >= self.max_items:
            batch = self._open[key] = []
            task = loop.create_task(self._run(key, batch))  # (runs next turn)
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        batch.append((item, reply))
        return await reply

    async def _run(self, key: Hashable, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if self._open.get(key) is batch:
            del self._open[key]  # (later calls start the next batch)
        try:
            replies = await self.call(key, [item for item, _ in batch])
            if len(replies) != len(batch):  # (no caller may wait for a reply never given)
                raise RuntimeError(f"{len(replies)} replies to {len(batch)} calls")
        except BaseException as e:
            for _, reply in batch:
                if not reply.done():
                    if isinstance(e, Exception):
                        reply.set_exception(e)
                    else:  # (the loop is shutting down)
                        reply.cancel()
            if not isinstance(e, Exception):
                raise
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if not reply.done():  # (its caller has gone)
                reply.set_result(value)


class TurnRoom:
    """The waiting room as the web process uses it: one event-loop turn's status reads of
    a concert go to Redis as one script call, and so do its joins.

    A script call costs Redis about 10 us, three quarters of it the call's own overhead,
    and the web process a command to pack and a reply to parse; and a turn's requests
    all wait until Redis has run the turn's whole batch. Every read and join keeps its
    own ``now`` (and ``touch``), and is applied in turn as a call of its own would be.
    """

    def __init__(self, room: WaitingRoom) -> None:
        self.room = room
        self._reads = TurnBatches(lambda concert_id, reads: room.statuses(concert_id, reads))
        self._joins = TurnBatches(lambda key, joins: room.joins(key[0], joins, key[1]))

    async def status(self, concert_id: int, user_id: int, token: str, now: datetime,
                     touch: bool = False) -> Place:
        """Where ``token`` stands (see :meth:`WaitingRoom.statuses`)."""
        reply = await self._reads.add(concert_id, (user_id, token, now, touch))
        return self.room.parse_status(reply)

    async def join(self, concert_id: int, user_id: int, token: str, now: datetime,
                   known: bool = True) -> Place | None:
        """Queue ``user_id``, or report their place (see :meth:`WaitingRoom.joins`)."""
        reply = await self._joins.add((concert_id, known), (user_id, token, now))
        return self.room.parse_join(reply)
