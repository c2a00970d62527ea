"""The waiting room on real Redis: gap-free positions under load, fair promotion, expiry."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from workers.waiting_room import WaitingRoom


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
    from datetime import datetime

    from jobs.clock import unix
    from workers.waiting_room import from_millis, millis

    moment = datetime(2026, 11, 27, 12, 0, 0, 123_999)
    assert millis(moment) == 1_795_780_800_123 == int(unix(moment) * 1000)
    assert from_millis(b"1795780800123") == moment.replace(microsecond=123_000)
    assert from_millis("1795780800123.0") == from_millis(1_795_780_800_123)
    assert millis(datetime(1970, 1, 1)) == 0
