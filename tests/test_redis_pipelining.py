"""The web process's Redis client: one loop turn's commands travel as one pipeline, and
each caller still gets its own reply or error."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions
from redis.asyncio.client import Pipeline

from tests.conftest import REDIS_URL
from tests.support import free_port
from web.app import redis_client


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The size of every pipeline sent."""
    sizes: list[int] = []
    execute = Pipeline.execute

    async def counting(self, *args, **kwargs):
        sizes.append(len(self.command_stack))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counting)
    return sizes


def run(coro):
    return asyncio.run(coro)


def incr_together(key: str, times: int, max_batch: int | None = None) -> list[int]:
    """``INCR key`` ``times`` times at once through one client; the replies, in order."""

    async def scenario() -> list[int]:
        client = redis_client(REDIS_URL)
        if max_batch is not None:
            client._max_batch = max_batch
        try:
            return await asyncio.gather(*(client.incr(key) for _ in range(times)))
        finally:
            await client.delete(key)
            await client.aclose()

    return run(scenario())


def test_concurrent_commands_share_one_round_trip(redis_prefix: str, sent: list[int]) -> None:
    replies = incr_together(f"{redis_prefix}:pipelined:counter", 100)
    assert sorted(replies) == list(range(1, 101))
    assert sent[0] == 100  # (then the DELETE, alone)


def test_a_full_batch_goes_at_once(redis_prefix: str, sent: list[int]) -> None:
    replies = incr_together(f"{redis_prefix}:pipelined:batch", 25, max_batch=10)
    assert sorted(replies) == list(range(1, 26))
    assert sent[:3] == [10, 10, 5]


def test_one_failing_command_fails_only_its_caller(redis_prefix: str) -> None:
    text, counter = f"{redis_prefix}:pipelined:text", f"{redis_prefix}:pipelined:n"

    async def scenario() -> list:
        client = redis_client(REDIS_URL)
        try:
            await client.set(text, "not a number")
            return await asyncio.gather(client.incr(counter), client.incr(text),
                                        client.get(text), return_exceptions=True)
        finally:
            await client.delete(text, counter)
            await client.aclose()

    first, failed, value = run(scenario())
    assert first == 1
    assert isinstance(failed, redis.exceptions.ResponseError)
    assert value == b"not a number"


def test_a_script_flushed_from_redis_is_loaded_again(redis_prefix: str) -> None:
    key = f"{redis_prefix}:pipelined:script"

    async def scenario() -> list:
        client = redis_client(REDIS_URL)
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        try:
            await script(keys=[key], args=[1])
            await client.script_flush()  # (what a restarted Redis also forgets)
            return await asyncio.gather(*(script(keys=[key], args=[10]) for _ in range(5)),
                                        client.get(key))
        finally:
            await client.delete(key)
            await client.aclose()

    *totals, read = run(scenario())
    assert sorted(totals) == [11, 21, 31, 41, 51]
    assert read == b"1"  # (queued before the NOSCRIPT retries: one turn, one pipeline)


def test_an_unreachable_redis_fails_every_caller_and_hangs_none() -> None:
    async def scenario() -> list:
        client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
        try:
            return await asyncio.wait_for(asyncio.gather(
                *(client.get(f"k{n}") for n in range(20)), return_exceptions=True), 10)
        finally:
            await client.aclose()

    replies = run(scenario())
    assert len(replies) == 20
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in replies)


def test_a_caller_that_gives_up_does_not_disturb_the_others(redis_prefix: str) -> None:
    key = f"{redis_prefix}:pipelined:cancel"

    async def scenario() -> tuple:
        client = redis_client(REDIS_URL)
        try:
            leaving = asyncio.ensure_future(client.incr(key))
            staying = [asyncio.ensure_future(client.incr(key)) for _ in range(3)]
            await asyncio.sleep(0)  # all four are queued
            leaving.cancel()
            done = await asyncio.gather(*staying)
            return done, int(await client.get(key)), leaving.cancelled()
        finally:
            await client.delete(key)
            await client.aclose()

    done, total, cancelled = run(scenario())
    assert cancelled
    assert total == 4  # the command was sent: only its caller stopped waiting
    assert sorted(done) in ([1, 2, 3], [2, 3, 4])
