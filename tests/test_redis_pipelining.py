"""The web process's Redis client: one loop turn's commands travel as one pipeline, and
each caller still gets its own reply or error."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.connection
import redis.exceptions

from tests.conftest import REDIS_URL
from tests.support import free_port
from web.app import PipeliningRedis, redis_client


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The number of commands in every write sent."""
    sizes: list[int] = []
    exchange = PipeliningRedis._exchange

    async def counting(self, connection, wire, commands):
        sizes.append(len(commands))
        return await exchange(self, connection, wire, commands)

    monkeypatch.setattr(PipeliningRedis, "_exchange", counting)
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
    assert sorted(sent[:3]) == [5, 10, 10]  # (three writes, on three connections)


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


def test_arguments_hiredis_cannot_pack_go_through_redis_pys_encoder(redis_prefix: str) -> None:
    key = f"{redis_prefix}:pipelined:encoded"

    async def scenario() -> list:
        client = redis_client(REDIS_URL)
        try:
            return await asyncio.gather(
                client.set(key, bytearray(b"raw")), client.get(key),
                client.set(key, None), client.set(f"{key}:f", 1e-7), client.get(f"{key}:f"),
                client.set(f"{key}:s", "caf\u00e9"), client.get(f"{key}:s"),
                client.set(f"{key}:bad", "\ud800"), return_exceptions=True)
        finally:
            await client.delete(key, f"{key}:f", f"{key}:s")
            await client.aclose()

    stored, read, refused, floated, float_read, text, text_read, surrogate = run(scenario())
    assert stored is True and read == b"raw"
    assert isinstance(refused, redis.exceptions.DataError)  # (only that caller fails)
    assert floated is True and float_read == b"1e-07"  # (as redis-py formats a float)
    assert text is True and text_read == "café".encode()
    assert isinstance(surrogate, UnicodeEncodeError)


def test_a_dropped_write_fails_its_batch_and_the_next_one_reconnects(
        redis_prefix: str, monkeypatch) -> None:
    key = f"{redis_prefix}:pipelined:dropped"
    send = redis.asyncio.connection.Connection.send_packed_command
    drops: list[int] = []

    async def dropping_once(self, *args, **kwargs):
        if not drops:
            drops.append(1)
            raise redis.exceptions.ConnectionError("dropped")
        return await send(self, *args, **kwargs)

    def together(client):
        return asyncio.gather(client.get(key), client.hgetall(f"{key}:none"),
                              client.execute_command("SCRIPT LOAD", "return 1"),
                              return_exceptions=True)

    async def scenario() -> tuple:
        client = redis_client(REDIS_URL)
        try:
            await client.set(key, "v")
            monkeypatch.setattr(redis.asyncio.connection.Connection, "send_packed_command",
                                dropping_once)
            return await together(client), await together(client)
        finally:
            monkeypatch.undo()
            await client.delete(key)
            await client.aclose()

    failed, (value, empty, sha) = run(scenario())
    assert drops == [1]
    assert all(isinstance(e, redis.exceptions.ConnectionError) for e in failed)
    assert value == b"v" and empty == {}  # (HGETALL's reply callback: a dict)
    assert len(sha) == 40  # ("SCRIPT LOAD" went as two words)
