"""The web process's Redis client: one loop turn's commands travel as one pipeline, and
each caller still gets its own reply or error."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

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


def test_script_calls_join_the_batch_and_a_pipeline_still_runs_them(
        redis_prefix: str, sent: list[int]) -> None:
    key = f"{redis_prefix}:pipelined:batched-script"

    async def scenario() -> tuple[list, list]:
        client = redis_client(REDIS_URL)
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        try:
            together = await asyncio.gather(*(script(keys=[key], args=[1]) for _ in range(20)))
            async with client.pipeline(transaction=True) as pipe:
                await script(keys=[key], args=[100], client=pipe)
                piped = await pipe.execute()
            return together, piped
        finally:
            await client.delete(key)
            await client.aclose()

    together, piped = run(scenario())
    assert sorted(together) == list(range(1, 21))
    assert sent[0] == 20  # (one write for the twenty calls)
    assert piped == [120]


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


def test_failed_connections_give_back_their_slot_once() -> None:
    async def scenario() -> tuple[int, int]:
        down = redis_client(f"redis://127.0.0.1:{free_port()}/0", max_connections=4)
        for n in range(6):  # (one batch each: one failed connection each)
            with pytest.raises(redis.exceptions.ConnectionError):
                await down.get(f"k{n}")
        up = redis_client(REDIS_URL, max_connections=4)
        try:
            await asyncio.gather(*(up.ping() for _ in range(10)))
        finally:
            await up.aclose()
        return down.connection_pool._slots._value, up.connection_pool._slots._value

    assert run(scenario()) == (4, 4)  # (the bound holds after an outage)


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


class SlowProxy:
    """A TCP proxy to the test Redis; its n-th connection's replies are held back
    ``delays[n]`` seconds (none past the list's end)."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{urlparse(REDIS_URL).path or '/0'}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, client_reader, client_writer) -> None:
        n = len(self.writers) // 2
        delay = self.delays[n] if n < len(self.delays) else 0.0
        upstream = urlparse(REDIS_URL)
        redis_reader, redis_writer = await asyncio.open_connection(upstream.hostname,
                                                                   upstream.port or 6379)
        self.writers += [client_writer, redis_writer]
        await asyncio.gather(self._pipe(client_reader, redis_writer, 0.0),
                             self._pipe(redis_reader, client_writer, delay))

    @staticmethod
    async def _pipe(reader, writer, delay: float) -> None:
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def test_a_batch_past_its_deadline_fails_as_a_timeout_and_leaves_no_late_reply(
        redis_prefix: str) -> None:
    key = f"{redis_prefix}:pipelined:deadline"

    async def scenario() -> tuple:
        direct = redis_client(REDIS_URL)
        await direct.mset({key: "first", f"{key}:2": "second"})
        async with SlowProxy([1.0]) as url:  # (its first connection answers 1 s late)
            client = PipeliningRedis(connection_pool=redis_client(url).connection_pool,
                                     reply_timeout=0.3)
            try:
                began = time.monotonic()
                late = await asyncio.gather(client.get(key), client.get(f"{key}:2"),
                                            return_exceptions=True)
                waited = time.monotonic() - began
                await asyncio.sleep(1.0)  # (the late replies come, to a dropped connection)
                return late, waited, await asyncio.gather(client.get(f"{key}:2"),
                                                          client.get(key))
            finally:
                await direct.delete(key, f"{key}:2")
                await direct.aclose()
                await client.aclose()

    late, waited, (second, first) = run(scenario())
    assert all(isinstance(e, redis.exceptions.TimeoutError) for e in late), late
    assert 0.25 < waited < 0.9
    assert (second, first) == (b"second", b"first")  # (each its own, on a new connection)


def test_a_pipeline_on_the_batching_client_has_the_same_deadline(redis_prefix: str) -> None:
    key = f"{redis_prefix}:pipelined:pipe"

    async def scenario() -> tuple:
        async with SlowProxy([1.0]) as url:
            client = PipeliningRedis(connection_pool=redis_client(url).connection_pool,
                                     reply_timeout=0.3)
            try:
                pipe = client.pipeline(transaction=True)
                pipe.set(key, "a").incr(f"{key}:n")
                began = time.monotonic()
                with pytest.raises(redis.exceptions.TimeoutError):
                    await pipe.execute()
                waited = time.monotonic() - began
                pipe = client.pipeline(transaction=True)
                return waited, await pipe.set(key, "b").incr(f"{key}:n").execute()
            finally:
                await client.delete(key, f"{key}:n")
                await client.aclose()

    waited, replies = run(scenario())
    assert 0.25 < waited < 0.9
    assert replies[0] is True and replies[1] in (1, 2)  # (the cut-off MULTI may have run)
