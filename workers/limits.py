"""Abuse limits in Redis: failed logins and phone codes, as sliding-window logs.

Each budget ("failed logins of one username", "codes sent to one number", ...) is a
sorted set of the hits it counted, scored by their time in unix milliseconds. A hit
counts while it is younger than the budget's window (``now - at < window``): a sliding
window, exact at both ends, never the double burst a fixed window allows at its edge.

One script (:data:`_TAKE`) checks every budget a request draws on and records the hit in
all of them, or in none: a refused request consumes nothing, and concurrent requests
cannot both take the last place. A refused request learns how long until every full
budget has room again (the ``Retry-After``). Refused requests are not recorded, so a set
never holds more than its limit. Each key expires one window after its latest hit.

Keys, under ``{prefix}:limit:``: ``login:user:{username}``, ``login:addr:{address}``,
``phone:user:{user_id}``, ``phone:number:{digits}``. Nothing outside this module knows
them.

Time comes from the clock given at construction (a ``FixedClock`` in tests), so every
process must keep its clock in sync (NTP); a skew of milliseconds is immaterial against
windows of minutes. Methods return an awaitable on a ``redis.asyncio`` client (the door)
and a value on a sync client (workers, tests): the same scripts serve both.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from db.settings import Settings
from jobs.clock import Clock
from jobs.errors import DomainError
from workers.coupon_gate import then
from workers.waiting_room import millis

# KEYS: one sorted set per budget. ARGV: now (ms), hit id, then limit and window (ms) per
# key. -> {1, 0}: the hit is recorded in every budget; {0, ms}: refused, nothing recorded,
# and ms until every full budget has a free place again.
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    -- the hit whose ageing out brings the count below the limit
    local frees = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, math.min(tonumber(frees[2]) + window - now, window))
  end
end
if wait > 0 then return {0, wait} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 2]))
end
return {1, 0}
"""
# KEYS: the budgets a hit was recorded in. ARGV: hit id. Forget the hit.
_GIVE_BACK = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` hits within any ``window`` seconds."""

    limit: int
    window: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window < 1:
            raise ValueError(f"a limit needs limit >= 1 and window >= 1 s, got {self}")


@dataclass(frozen=True)
class Hit:
    """A recorded hit: its id and the budgets it was counted in (to give it back)."""

    id: str
    keys: tuple[str, ...]


class Limits:
    """Every abuse limit kept in Redis, behind one API (async at the door, sync elsewhere).

    A refusal raises ``DomainError("RATE_LIMITED")`` whose ``retry_after`` is the whole
    number of seconds, rounded up, until the request would be let in.
    """

    def __init__(self, client: Any, prefix: str, clock: Clock, *, login_user: Rule,
                 login_address: Rule, phone_user: Rule, phone_number: Rule) -> None:
        self.client = client
        self.prefix = f"{prefix}:limit"
        self.clock = clock
        self.login_user, self.login_address = login_user, login_address
        self.phone_user, self.phone_number = phone_user, phone_number
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)

    @classmethod
    def from_settings(cls, client: Any, settings: Settings, clock: Clock | None = None) -> Limits:
        """The limits this deployment's settings configure."""
        return cls(
            client, settings.redis_prefix, clock or Clock(),
            login_user=Rule(settings.login_fail_limit_user, settings.login_fail_window),
            login_address=Rule(settings.login_fail_limit_address, settings.login_fail_window),
            phone_user=Rule(settings.phone_code_rate, settings.phone_code_rate_window),
            phone_number=Rule(settings.phone_code_number_rate, settings.phone_code_rate_window),
        )

    def login_attempt(self, username: str, address: str):
        """Count a login attempt as failed before the password is checked; its :class:`Hit`.

        Refused (``RATE_LIMITED``) once the username or the address has spent its budget
        of failures. Counting up front means concurrent attempts can never check more
        passwords than the budget allows; a login that succeeds (or meets a fault, not a
        wrong password) is taken back with :meth:`give_back`.
        """
        budgets = [(f"{self.prefix}:login:user:{username}", self.login_user),
                   (f"{self.prefix}:login:addr:{address}", self.login_address)]
        return self._hit(budgets, "too many failed logins; try again later")

    def phone_code(self, user_id: int, phone: str):
        """Count a code sent to ``phone`` for ``user_id``, within both budgets, or refuse.

        The number's key ignores a leading ``+``, so one number has one budget however
        it is written.
        """
        budgets = [(f"{self.prefix}:phone:user:{user_id}", self.phone_user),
                   (f"{self.prefix}:phone:number:{phone.lstrip('+')}", self.phone_number)]
        return self._hit(budgets, "too many codes requested; try again later")

    def give_back(self, hit: Hit):
        """Uncount a hit (a login that turned out not to fail)."""
        return self._give_back(keys=list(hit.keys), args=[hit.id])

    def _hit(self, budgets: list[tuple[str, Rule]], message: str):
        hit = Hit(secrets.token_hex(8), tuple(key for key, _ in budgets))
        args: list[Any] = [millis(self.clock.now()), hit.id]
        for _, rule in budgets:
            args += [rule.limit, rule.window * 1000]

        def judge(reply: list) -> Hit:
            taken, wait_ms = (int(v) for v in reply)
            if not taken:
                error = DomainError("RATE_LIMITED", message)
                error.retry_after = max(math.ceil(wait_ms / 1000), 1)
                raise error
            return hit

        return then(self._take(keys=list(hit.keys), args=args), judge)
