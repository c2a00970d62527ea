"""Logout reaches every web process: revoked sessions are held in memory, kept by the hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from jobs.errors import DomainError
from tests.support import Stack, two_webs
from tests.test_api_users import new_name
from web.auth import Tokens
from web.hub import LiveHub


@pytest.fixture(scope="module")
def webs(process_env) -> Iterator[tuple[Stack, Stack]]:
    yield from two_webs(process_env, processes=1, threads=2)


@pytest.mark.e2e
def test_a_logout_on_one_web_process_is_refused_on_the_other(webs):
    one, other = webs[0].api, webs[1].api
    name = new_name()
    token = one.signup_login(name)
    assert other.get("/users/me", token=token).status == 200
    # When the user logs out through one process
    assert one.post("/users/logout", token=token).status == 204
    # Then the other refuses the token too (the revocation travels on the hub)
    deadline = time.monotonic() + 2
    while (reply := other.get("/users/me", token=token)).status == 200:
        assert time.monotonic() < deadline, "the other process still accepts the token"
        time.sleep(0.01)
    assert (reply.status, reply.code) == (401, "INVALID_TOKEN")
    # ... and a new session of the same user is accepted by both
    fresh = one.login(name)["access_token"]
    assert other.get("/users/me", token=fresh).status == 200


def test_after_a_hub_gap_the_revocations_are_read_again(settings):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        hub = LiveHub(aioredis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        tokens = Tokens(settings.jwt_secret, 60, 60, client, settings.redis_prefix)
        await hub.start()
        await tokens.follow(hub)
        await asyncio.wait_for(tokens._loading, 5)
        claims = {"sid": f"s-{new_name()}"}
        await tokens.check_session(claims)
        # Given a revocation this process never heard of (published while it was away)
        await client.zadd(tokens.revoked_key, {claims["sid"]: time.time() + 60})
        await tokens.check_session(claims)  # (the memory is trusted while in sync)
        # When the hub reports a gap, the set is read again, and the session is refused
        tokens._on_event(None)
        with pytest.raises(DomainError) as refused:
            await tokens.check_session(claims)  # (asks Redis until the re-read is done)
        assert refused.value.code == "INVALID_TOKEN"
        await tokens._loading
        with pytest.raises(DomainError):
            await tokens.check_session(claims)
        await client.zrem(tokens.revoked_key, claims["sid"])
        await hub.stop()
        await client.aclose()

    asyncio.run(scenario())
