"""The live hub across real processes: job waits on two web processes, ``/jobs/events``
with ``Last-Event-ID`` replay, and a hub that survives its Redis connection being killed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import redis.asyncio as aioredis

from jobs.platform import REGISTRY, Domain, Event, load_domains
from tests import support
from tests.conftest import REDIS_URL
from tests.support import SseReader, Stack, succeeded
from web.app import hub_client
from web.hub import LiveHub
from workers.events import Publisher

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_webs(process_env) -> Iterator[tuple[Stack, Stack]]:
    """Two web processes (ports of their own) and one worker, on one database and Redis."""
    yield from support.two_webs(process_env, processes=1, threads=4)


def charge(stack: Stack, token: str, amount: int, wait: int = 0) -> tuple[int, dict, float]:
    started = time.monotonic()
    headers = {"Prefer": f"wait={wait}"} if wait else None
    reply = stack.api.post("/points/charge", {"amount": amount}, token=token, headers=headers)
    return reply.status, reply.body, time.monotonic() - started


def test_a_job_finishing_in_a_worker_wakes_waiters_on_both_web_processes(two_webs):
    first, second = two_webs
    token = first.api.signup_login(f"w{uuid.uuid4().hex[:8]}")
    # (a first job warms the worker up: its first job, under load, can take a second)
    assert charge(first, token, 1, wait=10)[0] == 200
    # When each web process gets a command that waits for its outcome
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda s: charge(s, token, 10, wait=10), (first, second)))
    # Then both answer 200 with the terminal job, woken by the hub, not by a re-read
    for status, body, seconds in answers:
        assert status == 200, body
        assert succeeded(body)["balance"] in (11, 21)
        assert seconds < 0.9, f"woken after {seconds:.2f}s: the once-a-second re-read, not the hub"
    # And a long poll on the other process wakes as well
    status, body, _ = charge(first, token, 5)
    assert status == 202
    started = time.monotonic()
    polled = second.api.get(f"/jobs/{body['id']}?wait=10", token=token)
    assert polled.body["status"] == "succeeded"
    assert time.monotonic() - started < 0.9


def test_job_events_stream_live_and_replay_what_a_reconnect_missed(two_webs):
    first, second = two_webs
    token = first.api.signup_login(f"s{uuid.uuid4().hex[:8]}")
    url = f"http://127.0.0.1:{second.port}/api/v1/jobs/events"
    # Given a client streaming its job events from the second web process
    stream = SseReader(url, token)
    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    ids = [charge(first, token, n)[1]["id"] for n in (1, 2, 3)]
    # Then it sees each job reach its outcome. (A job recorded before the stream's first
    # read of the database is replayed as it then was, queued, and its outcome follows
    # live; two outcomes committed close together may arrive in either order.)
    latest: dict[str, support.SseEvent] = {}
    deadline = time.monotonic() + 20
    while set(latest) != set(ids) or any(e.data["status"] != "succeeded"
                                          for e in latest.values()):
        assert time.monotonic() < deadline, latest
        event = stream.next()
        assert event.event == "job" and event.data["id"] in ids, event
        previous = latest.get(event.data["id"])
        assert previous is None or int(previous.id) < int(event.id)  # (a state once)
        latest[event.data["id"]] = event
    last_id = str(max(int(e.id) for e in latest.values()))
    stream.close()
    # When it is away while three more jobs finish
    away = [charge(first, token, n, wait=10)[1]["id"] for n in (4, 5, 6)]
    # Then a reconnect with Last-Event-ID gets each of them once, in order, then live ones
    again = SseReader(url, token, last_event_id=last_id)
    missed = again.take(3)
    assert [e.data["id"] for e in missed] == away
    assert all(e.data["status"] == "succeeded" for e in missed)
    assert [int(e.id) for e in missed] == sorted(int(e.id) for e in missed)
    assert int(missed[0].id) > int(last_id)
    live = charge(first, token, 7)[1]["id"]
    assert again.next().data["id"] == live
    again.close()


def test_streams_refuse_a_bad_last_event_id_and_a_missing_token(two_webs):
    first, _ = two_webs
    token = first.api.signup_login(f"b{uuid.uuid4().hex[:8]}")
    reply = first.api.get("/jobs/events", token=token, headers={"Last-Event-ID": "x1"})
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST")
    reply = first.api.get("/jobs/events")
    assert (reply.status, reply.code) == (401, "UNAUTHORIZED")


def test_the_hub_survives_its_redis_connection_being_killed():
    prefix = f"bzt-hub-{uuid.uuid4().hex[:8]}"
    load_domains()
    sync = redis.Redis.from_url(REDIS_URL)
    publisher = Publisher(sync, prefix)

    async def scenario() -> None:
        live = hub_client(REDIS_URL, name=f"{prefix}-hub")
        hub = LiveHub(live, prefix)
        got: list[Event | None] = []
        arrived = asyncio.Event()

        def listener(event: Event | None) -> None:
            got.append(event)
            arrived.set()

        hub.listen("job", "7", listener)
        await hub.start()
        await asyncio.wait_for(hub.connected.wait(), 5)

        async def publish_and_hear(n: int) -> Event | None:
            arrived.clear()
            for _ in range(50):  # until the (re)subscribed hub hears it
                publisher.publish([Event("job", {"n": n}, key="7", id=n)])
                try:
                    await asyncio.wait_for(arrived.wait(), 0.2)
                    return got[-1]
                except TimeoutError:
                    continue
            return None

        assert (await publish_and_hear(1)).data == {"n": 1}
        # When Redis drops the hub's connection
        killed = [c["id"] for c in sync.client_list() if c.get("name") == f"{prefix}-hub"]
        assert killed, "the hub's connection is named"
        for client_id in killed:
            sync.client_kill_filter(_id=client_id)
        # Then listeners hear of the gap (to replay from the database), and live events
        # flow again
        deadline = time.monotonic() + 10
        while None not in got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert None in got
        heard = await publish_and_hear(2)
        assert heard is not None and heard.data == {"n": 2}
        assert hub.reconnects >= 1
        await hub.stop()
        await live.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sync.close()


def test_the_hub_takes_one_event_or_a_topic_batch_in_order(settings):
    async def scenario() -> list[tuple[str | None, int | None, dict]]:
        hub = LiveHub(aioredis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        heard: list = []
        hub.listen("job", "*", lambda e: heard.append((e.key, e.id, e.data)))
        hub.listen("other", "7", lambda e: heard.append((e.key, e.id, e.data)))
        await hub.start()
        await asyncio.wait_for(hub.connected.wait(), 5)
        publisher = Publisher(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        # A batch: two job events and one of another topic leave in one flush
        publisher.publish([Event("job", {"n": 1}, "1", 10), Event("other", {"n": 2}, "7"),
                           Event("job", {"n": 3}, "2", 11)])
        deadline = time.monotonic() + 5
        while len(heard) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await hub.stop()
        return heard

    REGISTRY.register(Domain("hub-test", live_topics=frozenset({"other"})))
    try:
        heard = asyncio.run(scenario())
    finally:
        REGISTRY.unregister("hub-test")
    jobs = [h for h in heard if h[2]["n"] != 2]
    assert jobs == [("1", 10, {"n": 1}), ("2", 11, {"n": 3})]
    assert ("7", None, {"n": 2}) in heard and len(heard) == 3
