"""The waiting room on real Redis: gap-free positions under load, fair promotion, expiry."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timedelta

import pytest
import redis

from jobs.clock import unix
from web.app import redis_client
from workers.waiting_room import TurnRoom, WaitingRoom, from_millis, millis


@pytest.fixture
def room(settings):
    # One connection per thread of the 1,000-arrivals test (redis-py's default is 100).
    client = redis.Redis.from_url(settings.redis_url, max_connections=1000)
    prefix = f"{settings.redis_prefix}:wr-{uuid.uuid4().hex[:6]}"
    yield lambda limit, active_ttl=600, idle_ttl=120: WaitingRoom(client, prefix, limit,
                                                                   active_ttl, idle_ttl)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def join(r: WaitingRoom, user: int, now, concert: int = 1):
    return r.parse_join(r.join(concert, user, f"token-{user}", now))


def status(r: WaitingRoom, user: int, now, touch=False, concert: int = 1):
    return r.parse_status(r.status(concert, user, f"token-{user}", now, touch))


def test_1000_users_joining_at_once_get_positions_1_to_1000(room, clock):
    # Given a full room (no free active place) and 1,000 users arriving at once
    r = room(limit=0)
    places: dict[int, int] = {}
    lock = threading.Lock()

    def arrive(user: int) -> None:
        place = join(r, user, clock.now())
        with lock:
            places[user] = place.position

    threads = [threading.Thread(target=arrive, args=(u,)) for u in range(1, 1001)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every position 1..1000 is given exactly once, and asking again changes nothing
    assert sorted(places.values()) == list(range(1, 1001))
    again = join(r, 17, clock.now())
    assert (again.created, again.position, again.token) == (False, places[17], "token-17")


def test_promotion_is_in_arrival_order_and_never_exceeds_the_limit(room, clock):
    r = room(limit=3, active_ttl=60)
    arrivals = list(range(1, 11))
    for user in arrivals:
        join(r, user, clock.now())
    active = [u for u in arrivals if status(r, u, clock.now()).status == "ACTIVE"]
    assert active == [1, 2, 3]  # the first three found room at once
    assert r.promote(1, clock.now())[0] == 0  # no free place: no one moves
    assert [u for u in arrivals if status(r, u, clock.now()).status == "ACTIVE"] == [1, 2, 3]
    # When the first three's active time ends, the next three move up, in order
    clock.advance(seconds=61)
    for user in arrivals[3:]:
        status(r, user, clock.now(), touch=True)  # still polling
    promoted, ended, _ = r.promote(1, clock.now())
    assert (promoted, ended) == (3, 3)
    assert [u for u in arrivals if status(r, u, clock.now()).status == "ACTIVE"] == [4, 5, 6]
    assert [status(r, u, clock.now()).position for u in arrivals[6:]] == [1, 2, 3, 4]
    assert status(r, 1, clock.now()).status == "EXPIRED"


def test_concurrent_promotions_never_exceed_the_limit(room, clock):
    r = room(limit=5)
    for user in range(1, 201):
        join(r, user, clock.now())
    r.leave(1, 1)
    r.leave(1, 2)
    threads = [threading.Thread(target=r.promote, args=(1, clock.now())) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    active = [u for u in range(1, 201) if status(r, u, clock.now()).status == "ACTIVE"]
    assert active == [3, 4, 5, 6, 7]


def test_a_waiting_user_who_stops_polling_loses_their_place(room, clock):
    r = room(limit=0, idle_ttl=120)
    for user in (1, 2, 3):
        join(r, user, clock.now())
    clock.advance(seconds=100)
    status(r, 1, clock.now(), touch=True)
    status(r, 3, clock.now(), touch=True)
    clock.advance(seconds=30)  # user 2 last polled 130 s ago
    assert status(r, 2, clock.now()).status == "EXPIRED"  # refused even before the sweep
    r.promote(1, clock.now())
    assert [status(r, u, clock.now()).position for u in (1, 3)] == [1, 2]
    assert status(r, 2, clock.now()).status == "EXPIRED"
    fresh = join(r, 2, clock.now())  # coming back means the back of the line
    assert (fresh.created, fresh.position) == (True, 3)


def test_reading_a_place_never_moves_anyone(room, clock):
    r = room(limit=1)
    for user in (1, 2, 3):
        join(r, user, clock.now())
    before = [(status(r, u, clock.now()).status, status(r, u, clock.now()).position)
              for u in (1, 2, 3)]
    for _ in range(5):
        for u in (1, 2, 3):
            status(r, u, clock.now(), touch=True)
    after = [(status(r, u, clock.now()).status, status(r, u, clock.now()).position)
             for u in (1, 2, 3)]
    assert before == after == [("ACTIVE", 0), ("WAITING", 1), ("WAITING", 2)]


def test_a_replaced_token_is_expired(room, clock):
    r = room(limit=5)
    join(r, 1, clock.now())
    assert r.parse_status(r.status(1, 1, "some-other-token", clock.now())).status == "EXPIRED"
    assert r.parse_status(r.status(2, 1, "token-1", clock.now())).status == "EXPIRED"


def test_the_wait_estimate_follows_the_measured_promotion_rate(room, clock):
    r = room(limit=2, active_ttl=30)
    for user in range(1, 13):
        join(r, user, clock.now())
    far = status(r, 12, clock.now())
    assert r.estimated_wait(far) == 5 * 30  # no rate yet: 10 ahead, 2 at a time, 30 s each
    for _ in range(3):  # 6 promotions within a minute
        clock.advance(seconds=15)
        for u in range(1, 13):
            status(r, u, clock.now(), touch=True)
        clock.advance(seconds=16)
        r.promote(1, clock.now())
    place = status(r, 12, clock.now())
    assert place.promoted_last_minute >= 4
    assert r.estimated_wait(place) == -(-place.position * 60 // place.promoted_last_minute)


def test_a_join_not_known_to_exist_leaves_a_concert_without_a_line_alone(room, clock):
    r = room(limit=1)
    # Given a concert with no line yet: an unchecked join says so, and changes nothing
    assert r.parse_join(r.join(7, 1, "token-1", clock.now(), known=False)) is None
    assert not r.client.sismember(r.concerts_key, 7)
    assert not r.client.exists(*r.keys(7))
    # When it is joined as known (the caller checked the concert), the line starts
    assert join(r, 1, clock.now(), concert=7).status == "ACTIVE"
    # Then unchecked joins go straight in
    place = r.parse_join(r.join(7, 2, "token-2", clock.now(), known=False))
    assert (place.status, place.position) == ("WAITING", 1)


def test_times_travel_to_redis_as_exact_unix_milliseconds() -> None:
    moment = datetime(2026, 11, 27, 12, 0, 0, 123_999)
    assert millis(moment) == 1_795_780_800_123 == int(unix(moment) * 1000)
    assert from_millis(b"1795780800123") == moment.replace(microsecond=123_000)
    assert from_millis("1795780800123.0") == from_millis(1_795_780_800_123)
    assert millis(datetime(1970, 1, 1)) == 0


def test_a_turns_reads_go_as_one_call_per_concert_each_with_its_own_answer(room, clock,
                                                                             settings):
    # Given two concerts' lines: 40 users in concert 1 (3 active), 10 in concert 2
    r = room(limit=3)
    for user in range(1, 41):
        join(r, user, clock.now(), concert=1)
    for user in range(101, 111):
        join(r, user, clock.now(), concert=2)
    expected = {(c, u): status(r, u, clock.now(), concert=c)
                for c, users in ((1, range(1, 41)), (2, range(101, 111))) for u in users}
    later = clock.now() + timedelta(seconds=30)

    async def scenario():
        client = redis_client(settings.redis_url)
        try:
            aroom = WaitingRoom(client, r.prefix, 3, 600, 120)
            reads = TurnRoom(aroom)
            calls: list[int] = []
            statuses = aroom.statuses

            def counted(concert_id, batch):
                calls.append(len(batch))
                return statuses(concert_id, batch)

            aroom.statuses = counted
            # When all of them poll in one turn (user 5 without touching), one token wrong
            places = await asyncio.gather(
                *(reads.status(c, u, f"token-{u}", later, touch=u != 5) for c, u in expected),
                reads.status(1, 7, "not-the-token", later))
            return places, calls
        finally:
            await client.aclose()

    places, calls = asyncio.run(scenario())
    # Then one script call per concert went out, and each read got its own answer
    assert sorted(calls) == [10, 41]
    assert places[:-1] == list(expected.values())
    assert places[-1].status == "EXPIRED"
    # ... each with its own touch: user 5's last poll is the one before, user 6's is now
    client = redis.Redis.from_url(settings.redis_url)
    seen = r.keys(1)[2]
    assert client.zscore(seen, 6) > client.zscore(seen, 5)


def test_a_failed_read_fails_each_of_its_readers_and_one_that_leaves_disturbs_none(
        room, clock, settings):

    r = room(limit=0)
    for user in (1, 2, 3):
        join(r, user, clock.now())

    async def scenario():
        good = redis_client(settings.redis_url)
        dead = redis_client("redis://127.0.0.1:1/0")  # (nothing listens there)
        try:
            reads = TurnRoom(WaitingRoom(good, r.prefix, 0, 600, 120))
            leaving = asyncio.ensure_future(reads.status(1, 1, "token-1", clock.now()))
            staying = asyncio.ensure_future(reads.status(1, 2, "token-2", clock.now()))
            await asyncio.sleep(0)
            leaving.cancel()
            kept = await staying
            down = TurnRoom(WaitingRoom(dead, r.prefix, 0, 600, 120))
            failed = await asyncio.gather(down.status(1, 2, "token-2", clock.now()),
                                          down.status(1, 3, "token-3", clock.now()),
                                          return_exceptions=True)
            return leaving.cancelled(), kept, failed
        finally:
            await good.aclose()
            await dead.aclose()

    cancelled, kept, failed = asyncio.run(scenario())
    assert cancelled and (kept.status, kept.position) == ("WAITING", 2)
    assert all(isinstance(e, redis.exceptions.ConnectionError) for e in failed), failed


def test_a_turns_joins_go_as_one_call_and_each_gets_its_own_place(room, clock, settings):
    r = room(limit=2)
    join(r, 1, clock.now(), concert=3)  # (concert 3 has a line; concert 4 has none)

    async def scenario():
        client = redis_client(settings.redis_url)
        try:
            aroom = WaitingRoom(client, r.prefix, 2, 600, 120)
            calls: list[int] = []
            joins = aroom.joins

            def counted(concert_id, batch, known):
                calls.append(len(batch))
                return joins(concert_id, batch, known)

            aroom.joins = counted
            turns = TurnRoom(aroom)
            # When 30 users join concert 3 in one turn (user 1 again), and 3 join concert 4
            # before anyone has checked that it exists
            places = await asyncio.gather(
                *(turns.join(3, u, f"token-{u}", clock.now(), known=False)
                  for u in range(1, 31)),
                *(turns.join(4, u, f"token-{u}", clock.now(), known=False)
                  for u in (1, 2, 3)))
            return places, calls
        finally:
            await client.aclose()

    places, calls = asyncio.run(scenario())
    assert sorted(calls) == [3, 30]
    line, no_line = places[:30], places[30:]
    # Then user 1 keeps their place, one more becomes active, and the rest wait in order
    assert (line[0].token, line[0].created, line[0].status) == ("token-1", False, "ACTIVE")
    assert [p.status for p in line[1:]] == ["ACTIVE"] + ["WAITING"] * 28
    assert [p.position for p in line[2:]] == list(range(1, 29))
    assert all(p.created for p in line[1:])
    # ... and a concert without a line is left alone, for each of its joiners
    assert no_line == [None, None, None]
    assert status(r, 1, clock.now(), concert=4).status == "EXPIRED"


def test_turn_batches_split_at_their_limit_and_never_leave_a_caller_waiting() -> None:
    from workers.waiting_room import TurnBatches

    calls: list[tuple] = []

    async def echo(key, items):
        calls.append((key, len(items)))
        return [f"{key}:{item}" for item in items]

    async def short(key, items):
        return items[:-1]  # (one reply too few)

    async def scenario():
        batches = TurnBatches(echo, max_items=4)
        replies = await asyncio.gather(*(batches.add("a", n) for n in range(10)),
                                       batches.add("b", 0))
        failing = TurnBatches(short)
        failed = await asyncio.wait_for(
            asyncio.gather(failing.add("a", 1), failing.add("a", 2), return_exceptions=True),
            timeout=5)
        return replies, failed

    replies, failed = asyncio.run(scenario())
    assert replies == [f"a:{n}" for n in range(10)] + ["b:0"]
    assert sorted(calls) == [("a", 2), ("a", 4), ("a", 4), ("b", 1)]
    assert all(isinstance(e, RuntimeError) for e in failed), failed
