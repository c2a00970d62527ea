"""The Redis gate in front of first-come coupons.

One atomic script per request decides, without touching PostgreSQL, whether the request
can possibly win: outside the coupon's window, or when the remaining count is spent, it
is refused at once. A would-be winner is counted down and remembered, then PostgreSQL
decides for real (UNIQUE and CHECK constraints). When the gate's keys are missing (new
coupon, Redis restarted), they are rebuilt from the database: remaining = stock - issued,
plus the users who hold one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

from db.models import Coupon
from jobs.clock import unix
from jobs.errors import DomainError

# KEYS: state hash, holders set. ARGV: user, now (unix). -> ok|known|sold_out|not_active|unknown
_PASS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local window = redis.call('HMGET', KEYS[1], 'starts', 'ends')
local now = tonumber(ARGV[2])
if now < tonumber(window[1]) or now >= tonumber(window[2]) then return 'not_active' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'known' end
if tonumber(redis.call('HGET', KEYS[1], 'remaining')) <= 0 then return 'sold_out' end
redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('SADD', KEYS[2], ARGV[1])
return 'ok'
"""
# KEYS: state hash, holders set. ARGV: remaining, starts, ends, holders...
_LOAD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 5000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
redis.call('HSET', KEYS[1], 'remaining', ARGV[1], 'starts', ARGV[2], 'ends', ARGV[3])
return 1
"""
# KEYS: state hash, holders set. ARGV: user. Undo an 'ok' whose issue failed for good.
_GIVE_BACK = """
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'remaining', 1)
end
return 1
"""
# KEYS: state hash. Close a gate that exists; never create one.
_SOLD_OUT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'remaining', 0) end
return 1
"""


def then(value: Any, step: Callable[[Any], Any]) -> Any:
    """``step(value)``; when ``value`` is awaitable, a coroutine doing the same.

    Lets one sequence of Redis calls serve both the asyncio client at the door and the
    sync client in workers.
    """
    if not inspect.isawaitable(value):
        return step(value)

    async def later() -> Any:
        result = step(await value)
        return await result if inspect.isawaitable(result) else result

    return later()


class CouponGate:
    """Admits or refuses coupon requests in Redis, in one round trip each.

    On an asyncio client every method returns an awaitable.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._pass = client.register_script(_PASS)
        self._load = client.register_script(_LOAD)
        self._give_back = client.register_script(_GIVE_BACK)
        self._sold_out = client.register_script(_SOLD_OUT)

    def keys(self, coupon_id: int) -> list[str]:
        """The state hash and holders set of a coupon."""
        base = f"{self.prefix}:coupon:{coupon_id}"
        return [base, f"{base}:holders"]

    def try_pass(self, coupon_id: int, user_id: int, now: datetime):
        """Run the gate once; the raw verdict (an awaitable on an asyncio client)."""
        return self._pass(keys=self.keys(coupon_id), args=[user_id, unix(now)])

    def load(self, coupon: Coupon, holders: list[int]):
        """Rebuild a missing gate from the database's state (awaitable on asyncio)."""
        return self._load(keys=self.keys(coupon.id), args=[
            coupon.stock - coupon.issued, unix(coupon.starts_at), unix(coupon.ends_at),
            *holders])

    @staticmethod
    def judge(reply) -> str:
        """``ok``, ``known`` or ``unknown`` from a raw verdict; the two refusals raise."""
        verdict = reply.decode() if isinstance(reply, bytes) else reply
        if verdict == "not_active":
            raise DomainError("COUPON_NOT_ACTIVE", "this coupon cannot be issued now")
        if verdict == "sold_out":
            raise DomainError("COUPON_SOLD_OUT", "no coupons left")
        return verdict

    def admit(self, coupon_id: int, user_id: int, now: datetime,
              gate_state: Callable[[int], Any]):
        """``ok`` (counted down) or ``known`` (let the database decide); refusals raise.

        A gate with no state yet is rebuilt from ``gate_state(coupon_id)`` (the coupon and
        its holders; ``COUPON_NOT_FOUND`` for an unknown coupon), then asked again.
        """
        def second_try(_: Any) -> Any:
            return then(self.try_pass(coupon_id, user_id, now), self.judge)

        def rebuild_if_unknown(verdict: str) -> Any:
            if verdict != "unknown":
                return verdict
            return then(then(gate_state(coupon_id), lambda st: self.load(*st)), second_try)

        return then(then(self.try_pass(coupon_id, user_id, now), self.judge),
                    rebuild_if_unknown)

    def give_back(self, coupon_id: int, user_id: int):
        """Return a place taken by a request that then failed for good."""
        return self._give_back(keys=self.keys(coupon_id), args=[user_id])

    def mark_sold_out(self, coupon_id: int):
        """The database says none are left: stop admitting anyone (a gate kept, not made)."""
        return self._sold_out(keys=self.keys(coupon_id))

    def forget(self, coupon_id: int):
        """Drop the gate's state (it is rebuilt from the database on next use)."""
        return self.client.delete(*self.keys(coupon_id))
