"""Phone verification codes in Redis: 6 digits, 3 minutes, 5 tries.

How many codes a user or a number may get is ``workers.limits.Limits``' concern: the
view asks it before :meth:`PhoneCodes.send`.
"""

from __future__ import annotations

import asyncio
import secrets

import redis.asyncio as aioredis
from aiohttp import web

from jobs.errors import DomainError
from web.sms import SmsSender

# KEYS[1] code hash; ARGV: phone, code, max tries -> "ok" | "wrong" | "missing"
_VERIFY = """
local stored = redis.call('HMGET', KEYS[1], 'phone', 'code')
if not stored[1] then return 'missing' end
if stored[1] == ARGV[1] and stored[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 'ok'
end
if redis.call('HINCRBY', KEYS[1], 'tries', 1) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
end
return 'wrong'
"""


class PhoneCodes:
    """Issues and checks one pending code per user."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        sender: SmsSender,
        ttl: int,
        max_tries: int,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.sender = sender
        self.ttl, self.max_tries = ttl, max_tries
        self._verify = client.register_script(_VERIFY)

    def code_key(self, user_id: int) -> str:
        """Where the pending code of ``user_id`` lives."""
        return f"{self.prefix}:phone:code:{user_id}"

    async def send(self, user_id: int, phone: str) -> None:
        """Send a fresh code, replacing any pending one (the rate limit is checked before)."""
        code = f"{secrets.randbelow(10**6):06d}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.code_key(user_id))
        pipe.hset(self.code_key(user_id), mapping={"phone": phone, "code": code, "tries": 0})
        pipe.expire(self.code_key(user_id), self.ttl)
        await pipe.execute()
        text = f"Your Bazaar verification code is {code}. It expires in {self.ttl // 60} minutes."
        await asyncio.get_running_loop().run_in_executor(None, self.sender.send, phone, text)

    async def check(self, user_id: int, phone: str, code: str) -> None:
        """Accept the right code once; anything else is ``INVALID_VERIFICATION_CODE``."""
        outcome = await self._verify(keys=[self.code_key(user_id)], args=[phone, code,
                                                                          self.max_tries])
        if (outcome.decode() if isinstance(outcome, bytes) else outcome) != "ok":
            raise DomainError("INVALID_VERIFICATION_CODE", "the code is wrong, used or expired")


PHONE_CODES = web.AppKey("phone_codes", PhoneCodes)
