"""1,000 users taking queue tokens at once over HTTP, with no scheduler moving the line."""

from __future__ import annotations

from datetime import date

import jwt
import pytest
import redis

from jobs import concerts
from jobs.clock import utcnow
from tests.conftest import process_stack
from tests.loadclient import post_many
from tests.shop_fixtures import bulk_users
from tests.support import Stack
from workers.waiting_room import WaitingRoom


@pytest.fixture(scope="module")
def stack(process_env):
    """Real processes: this module's tests need them."""
    yield from process_stack(process_env)

pytestmark = pytest.mark.e2e


def new_concert(database) -> int:
    with database.connection_context():
        return concerts.create_concert("crowd", [(date(2027, 7, 1), 100)], utcnow())["id"]


def queue_tokens(api_base: str, tokens: list[str], concert_id: int) -> list[dict]:
    import asyncio

    requests = [("/queue/tokens", {"concert_id": concert_id}, {"Authorization": f"Bearer {t}"})
                for t in tokens]
    return [body for _, body in asyncio.run(post_many(api_base, requests, concurrency=100))]


def test_1000_users_taking_tokens_at_once_over_http(process_env, database, settings,
                                                  no_waiting_rooms):
    # Given a room with no free place, so everyone waits
    stack = Stack({**process_env, "QUEUE_ACTIVE_LIMIT": "0"})
    stack.start_web()
    try:
        tokens = bulk_users(database, settings, "crowd_", 1_000)
        cid = new_concert(database)
        # When 1,000 users take a token at once
        queued = queue_tokens(stack.api.base, tokens, cid)
    finally:
        stack.stop()
    # Then positions 1..1,000 are each given exactly once
    assert {q["status"] for q in queued} == {"WAITING"}
    assert sorted(q["position"] for q in queued) == list(range(1, 1_001))
    # ... and promotion takes them in that order, never past the limit
    room = WaitingRoom(redis.Redis.from_url(settings.redis_url), settings.redis_prefix, 10,
                       600, 3600)
    assert room.promote(cid, utcnow())[0] == 10
    assert room.promote(cid, utcnow())[0] == 0
    by_position = sorted(zip(queued, tokens, strict=True), key=lambda qt: qt[0]["position"])
    def place(queue_token: str):
        owner = int(jwt.decode(queue_token, options={"verify_signature": False})["sub"])
        return room.parse_status(room.status(cid, owner, queue_token, utcnow()))

    states = [place(q["token"]) for q, _ in by_position[:12]]
    assert [s.status for s in states] == ["ACTIVE"] * 10 + ["WAITING"] * 2
    assert [s.position for s in states[10:]] == [1, 2]
