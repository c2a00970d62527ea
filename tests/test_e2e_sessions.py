"""Logout reaches every web process: revoked sessions are held in memory, kept by the hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aioredis

from jobs import users
from jobs.clock import utcnow
from jobs.errors import DomainError
from tests.support import Stack, two_webs
from tests.test_api_users import new_name
from web.auth import Tokens
from web.db import DbExecutor
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


def test_after_a_hub_gap_the_revocations_are_read_again(settings, database):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        hub = LiveHub(aioredis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        db = DbExecutor(database, 2)
        tokens = Tokens(settings.jwt_secret, 60, 60, client, settings.redis_prefix, db)
        await hub.start()
        await tokens.follow(hub)
        await asyncio.wait_for(tokens._loading, 5)
        claims = {"sid": f"s-{new_name()}"}
        await tokens.check_session(claims)
        # Given a revocation this process never heard of (published while it was away)
        await db(users.revoke_session, claims["sid"], utcnow() + timedelta(seconds=60))
        await tokens.check_session(claims)  # (the memory is trusted while in sync)
        # When the hub reports a gap, the set is read again, and the session is refused
        tokens._on_event(None)
        with pytest.raises(DomainError) as refused:
            await tokens.check_session(claims)  # (asks the database until the re-read)
        assert refused.value.code == "INVALID_TOKEN"
        await tokens._loading
        with pytest.raises(DomainError):
            await tokens.check_session(claims)
        await hub.stop()
        await client.aclose()
        db.pool.shutdown()

    asyncio.run(scenario())


def forget_key_space(url: str, prefix: str) -> None:
    """What a Redis that restarts empty does to a key space."""
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


def test_a_logout_and_a_spent_refresh_token_outlive_a_redis_that_restarts_empty(
        settings, database):
    prefix = f"{settings.redis_prefix}-restart"  # (its own: the others' keys stay)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        db = DbExecutor(database, 2)
        before = Tokens(settings.jwt_secret, 60, 60, client, prefix, db)
        pair = before.issue(7)
        access = before.decode(pair["access_token"], "access")
        refresh = before.decode(pair["refresh_token"], "refresh")
        spent = before.decode(before.issue(7)["refresh_token"], "refresh")
        await before.use_refresh_token(spent)
        await before.revoke_session(access["sid"])
        # When Redis loses everything, and a web process starts afresh on it
        forget_key_space(settings.redis_url, prefix)
        hub = LiveHub(aioredis.Redis.from_url(settings.redis_url), prefix)
        after = Tokens(settings.jwt_secret, 60, 60, client, prefix, db)
        await hub.start()
        await after.follow(hub)
        # Then the logged-out session is refused, before and after its first read...
        for _ in range(2):
            for claims in (access, refresh):
                with pytest.raises(DomainError) as refused:
                    await after.check_session(claims)
                assert refused.value.code == "INVALID_TOKEN"
            await asyncio.wait_for(after._loading, 5)
        # ... and the spent refresh token stays spent
        with pytest.raises(DomainError) as reused:
            await after.use_refresh_token(spent)
        assert reused.value.message == "this refresh token was already used"
        await hub.stop()
        await client.aclose()
        db.pool.shutdown()

    asyncio.run(scenario())


def test_a_refresh_token_presented_many_times_at_once_is_spent_once(database):
    jti, until = f"jti-{new_name()}", utcnow() + timedelta(minutes=5)

    def spend() -> bool:
        with database.connection_context():
            return users.spend_refresh_token(jti, until)

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(lambda _: spend(), range(64)))
    assert won.count(True) == 1


def test_expired_revocations_and_spent_tokens_are_forgotten_and_no_others(database, clock):
    from db.models import RevokedSession, SpentRefreshToken
    from jobs.platform import Context

    tag = new_name()
    with database.connection_context():
        users.revoke_session(f"old-{tag}", clock.now() - timedelta(seconds=1))
        users.revoke_session(f"live-{tag}", clock.now() + timedelta(hours=1))
        users.revoke_session(f"live-{tag}", clock.now() - timedelta(hours=1))  # (extends only)
        assert users.spend_refresh_token(f"old-{tag}", clock.now() - timedelta(seconds=1))
        assert users.spend_refresh_token(f"live-{tag}", clock.now() + timedelta(hours=1))
        users.forget_expired_tokens(Context(now=clock.now(), services=None))
        assert {s for (s,) in RevokedSession.select(RevokedSession.sid).tuples()
                if s.endswith(tag)} == {f"live-{tag}"}
        assert {j for (j,) in SpentRefreshToken.select(SpentRefreshToken.jti).tuples()
                if j.endswith(tag)} == {f"live-{tag}"}
        assert users.is_revoked(f"live-{tag}", clock.now())
        assert not users.is_revoked(f"old-{tag}", clock.now())
