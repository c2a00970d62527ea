"""Contract tests for concert reservation: the waiting room, dates, seats, holds and payment.

Binding contract: /work/shared/API.md, sections "Conventions", "Commands and jobs" and
"Concert reservation".

The module runs its own web process and worker with a small, predictable waiting room
(3 active places, 10 min active time, 2 min idle time) and NO scheduler: nobody is
promoted unless a test runs the promotion itself. Each concert has its own line, so
every test creates its own concert (and its own users) and looks only at those.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import jwt
import pytest
import redis

from db.models import ConcertDate, Reservation
from jobs.clock import utcnow
from tests.inprocess import InProcessStack
from tests.support import Api, Reply, admin_token, assert_failed, finish, now, parse_time, succeeded
from workers.waiting_room import WaitingRoom

ACTIVE_LIMIT = 3
ACTIVE_TTL = 600
IDLE_TTL = 120
WAIT = {"Prefer": "wait=5"}
DAY1, DAY2 = "2031-05-01", "2031-05-02"
PRICE1, PRICE2 = 1000, 2500
JOIN_FIELDS = {"token", "status", "position", "active_until"}
PLACE_FIELDS = {"status", "position", "estimated_wait_seconds", "active_until"}


# -- helpers ---------------------------------------------------------------------------


def new_name() -> str:
    """A username no other test uses."""
    return f"c_{uuid.uuid4().hex[:10]}"


def qt(token: str | None) -> dict[str, str]:
    """The Queue-Token header (none for None)."""
    return {} if token is None else {"Queue-Token": token}


@dataclass
class Person:
    """A signed-up user: access token, id and the queue tokens they hold, by concert."""

    token: str
    id: int
    queue: dict[int, str] = field(default_factory=dict)


def new_person(api: Api) -> Person:
    token = api.signup_login(new_name())
    me = api.get("/users/me", token=token)
    assert me.status == 200, me
    return Person(token, me.body["id"])


def new_concert(api: Api, admin: str, dates: list[dict] | None = None) -> dict:
    """A fresh concert (so a fresh, empty line); its body."""
    dates = dates or [{"date": DAY1, "seat_price": PRICE1}, {"date": DAY2, "seat_price": PRICE2}]
    reply = api.post("/admin/concerts", {"title": f"concert {uuid.uuid4().hex[:8]}",
                                         "dates": dates}, token=admin)
    assert reply.status == 201, reply
    return reply.body


def join(api: Api, person: Person, concert_id: int, expect: int = 201) -> dict:
    """``POST /queue/tokens``; remembers the token on the person."""
    reply = api.post("/queue/tokens", {"concert_id": concert_id}, token=person.token)
    assert reply.status == expect, reply
    person.queue[concert_id] = reply.body["token"]
    return reply.body


def place(api: Api, person: Person, concert_id: int) -> Reply:
    """``GET /queue/tokens/me`` with the person's token for the concert."""
    return api.get("/queue/tokens/me", token=person.token, headers=qt(person.queue[concert_id]))


def place_of(api: Api, person: Person, concert_id: int) -> dict:
    reply = place(api, person, concert_id)
    assert reply.status == 200, reply
    return reply.body


def reserve(api: Api, person: Person, concert_id: int, day: str = DAY1, seat_no: int = 1,
            queue_token: str | None = None) -> dict:
    """``POST /reservations``; the terminal job."""
    body = {"concert_id": concert_id, "date": day, "seat_no": seat_no}
    headers = WAIT | qt(queue_token or person.queue[concert_id])
    return finish(api, api.post("/reservations", body, token=person.token, headers=headers),
                  person.token)


def hold(api: Api, person: Person, concert_id: int, day: str = DAY1, seat_no: int = 1) -> int:
    """A seat held by the person; its reservation id."""
    return succeeded(reserve(api, person, concert_id, day, seat_no))["reservation_id"]


def pay(api: Api, person: Person, reservation_id: int | str, queue_token: str) -> dict:
    """``POST /reservations/{id}/payment``; the terminal job."""
    reply = api.post(f"/reservations/{reservation_id}/payment", token=person.token,
                     headers=WAIT | qt(queue_token))
    return finish(api, reply, person.token)


def charge(api: Api, token: str, amount: int) -> None:
    job = finish(api, api.post("/points/charge", {"amount": amount}, token=token,
                               headers=WAIT), token)
    succeeded(job)


def balance(api: Api, token: str) -> int:
    reply = api.get("/points", token=token)
    assert reply.status == 200, reply
    return reply.body["balance"]


def seat_map(api: Api, person: Person, concert_id: int, day: str = DAY1) -> dict[int, str]:
    """seat_no -> status of a date, read with the person's token."""
    reply = api.get(f"/concerts/{concert_id}/dates/{day}/seats", token=person.token,
                    headers=qt(person.queue[concert_id]))
    assert reply.status == 200, reply
    return {s["seat_no"]: s["status"] for s in reply.body["items"]}


def dates_of(api: Api, person: Person, concert_id: int) -> list[dict]:
    reply = api.get(f"/concerts/{concert_id}/dates", token=person.token,
                    headers=qt(person.queue[concert_id]))
    assert reply.status == 200, reply
    return reply.body["items"]


def forged_token(person: Person, concert_id: int) -> str:
    """A queue token of the right shape, signed with the wrong secret."""
    claims = {"sub": str(person.id), "cid": concert_id, "typ": "queue", "sid": "x", "jti": "y",
              "iat": int(time.time()), "exp": int(time.time()) + 3600}
    return jwt.encode(claims, "not-the-secret-of-this-deployment-0123456789", algorithm="HS256")


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.code == code, reply
    assert isinstance(reply.body["error"]["message"], str)


def walk(api: Api, path: str, limit: int = 100) -> list[dict]:
    """Every item of a list endpoint, following ``next_cursor``."""
    items, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        reply = api.get(f"{path}{query}")
        assert reply.status == 200, reply
        items += reply.body["items"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return items


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concert_stack(process_env: dict[str, str]) -> Iterator[InProcessStack]:
    """Web and worker with a 3-place waiting room; no scheduler, so no one is promoted."""
    s = InProcessStack({**process_env, "QUEUE_ACTIVE_LIMIT": str(ACTIVE_LIMIT),
               "QUEUE_ACTIVE_TTL": str(ACTIVE_TTL), "QUEUE_IDLE_TTL": str(IDLE_TTL)})
    try:
        s.start_worker(processes=1, threads=8)
        s.start_web()
        yield s
    finally:
        s.stop()


@pytest.fixture
def api(concert_stack: InProcessStack) -> Api:
    return concert_stack.api


@pytest.fixture(scope="module")
def room(settings) -> Iterator[WaitingRoom]:
    """The same waiting room as the processes', to run the scheduler's promotion by hand."""
    client = redis.Redis.from_url(settings.redis_url)
    yield WaitingRoom(client, settings.redis_prefix, ACTIVE_LIMIT, ACTIVE_TTL, IDLE_TTL)
    client.close()


@pytest.fixture(scope="module")
def admin(concert_stack: InProcessStack, database) -> str:
    """The access token of a user holding the admin role."""
    return admin_token(concert_stack.api, database)


@pytest.fixture
def concert(api: Api, admin: str) -> dict:
    """A fresh concert with two dates."""
    return new_concert(api, admin)


@pytest.fixture
def cid(concert: dict) -> int:
    return concert["id"]


@pytest.fixture
def fan(api: Api, cid: int) -> Person:
    """The first in line for the fresh concert: ACTIVE."""
    person = new_person(api)
    assert join(api, person, cid)["status"] == "ACTIVE"
    return person


@pytest.fixture
def crowd(api: Api, cid: int) -> list[Person]:
    """Five users who joined the fresh concert in order: 3 ACTIVE, then 2 WAITING."""
    people = [new_person(api) for _ in range(5)]
    for person in people:
        join(api, person, cid)
    return people


# -- POST /admin/concerts --------------------------------------------------------------


def test_admin_creates_a_concert_with_50_seats_per_date_201(api, admin):
    # Given an admin and two dates, given out of order
    body = {"title": "Spring Gala", "dates": [{"date": "2031-06-02", "seat_price": 70_000},
                                              {"date": "2031-06-01", "seat_price": 50_000}]}
    # When creating the concert
    reply = api.post("/admin/concerts", body, token=admin)
    # Then it is created with its id, and every date carries 50 seats
    assert reply.status == 201, reply
    assert set(reply.body) == {"id", "title", "dates"}
    assert isinstance(reply.body["id"], int)
    assert reply.body["title"] == "Spring Gala"
    assert sorted(reply.body["dates"], key=lambda d: d["date"]) == [
        {"date": "2031-06-01", "seat_price": 50_000, "seats": 50},
        {"date": "2031-06-02", "seat_price": 70_000, "seats": 50},
    ]


@pytest.mark.parametrize(
    ("title", "dates"),
    [("t", [{"date": DAY1, "seat_price": 0}]),
     ("t" * 200, [{"date": (date(2031, 1, 1) + timedelta(days=n)).isoformat(),
                   "seat_price": 100_000_000} for n in range(60)])],
    ids=["lower-bounds", "upper-bounds"],
)
def test_concert_bounds_are_accepted(api, admin, title, dates):
    # Given a title and dates at the edges of the allowed ranges
    # When an admin creates the concert
    reply = api.post("/admin/concerts", {"title": title, "dates": dates}, token=admin)
    # Then it is created as given
    assert reply.status == 201, reply
    assert reply.body["title"] == title
    assert len(reply.body["dates"]) == len(dates)
    assert {d["seat_price"] for d in reply.body["dates"]} == {dates[0]["seat_price"]}


def _line(**change) -> dict:
    return {"date": DAY1, "seat_price": 100} | change


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "", "dates": [_line()]}, "title"),
        ({"title": "t" * 201, "dates": [_line()]}, "title"),
        ({"title": 5, "dates": [_line()]}, "title"),
        ({"dates": [_line()]}, "title"),
        ({"title": "t"}, "dates"),
        ({"title": "t", "dates": []}, "dates"),
        ({"title": "t", "dates": _line()}, "dates"),
        ({"title": "t", "dates": [_line(date=(date(2031, 1, 1) + timedelta(days=n)).isoformat())
                                  for n in range(61)]}, "dates"),
        ({"title": "t", "dates": [_line(), _line(seat_price=200)]}, "dates"),
        ({"title": "t", "dates": [_line(seat_price=-1)]}, "dates[0].seat_price"),
        ({"title": "t", "dates": [_line(seat_price=100_000_001)]}, "dates[0].seat_price"),
        ({"title": "t", "dates": [_line(seat_price=1.5)]}, "dates[0].seat_price"),
        ({"title": "t", "dates": [_line(seat_price="100")]}, "dates[0].seat_price"),
        ({"title": "t", "dates": [{"date": DAY1}]}, "dates[0].seat_price"),
        ({"title": "t", "dates": [_line(date="2031-02-30")]}, "dates[0].date"),
        ({"title": "t", "dates": [_line(date="2031/05/01")]}, "dates[0].date"),
        ({"title": "t", "dates": [_line(date="2031-5-1")]}, "dates[0].date"),
        ({"title": "t", "dates": [_line(), _line(date=20310502)]}, "dates[1].date"),
        ({"title": "t", "dates": [_line(hall="A")]}, "dates[0].hall"),
        ({"title": "t", "dates": [_line()], "venue": "x"}, "venue"),
    ],
    ids=["empty-title", "long-title", "int-title", "missing-title", "missing-dates",
         "no-dates", "dates-not-a-list", "61-dates", "duplicate-date", "negative-price",
         "price-over-max", "float-price", "string-price", "missing-price", "impossible-date",
         "slashed-date", "short-date", "int-date", "unknown-date-field", "unknown-field"],
)
def test_invalid_concert_is_400_naming_the_field(api, admin, body, field):
    # Given a concert body that is wrong in one way
    # When an admin creates it
    reply = api.post("/admin/concerts", body, token=admin)
    # Then it is refused, naming the field
    assert_error(reply, 400, "INVALID_REQUEST")
    assert field in reply.body["error"]["fields"], reply


def test_a_concert_date_must_be_written_yyyy_mm_dd(api, admin):
    # Given a date in the ISO week form (10 characters, but not YYYY-MM-DD)
    body = {"title": "t", "dates": [_line(date="2031-W18-4")]}
    # When an admin creates the concert
    reply = api.post("/admin/concerts", body, token=admin)
    # Then it is refused like any other date that is not YYYY-MM-DD
    assert_error(reply, 400, "INVALID_REQUEST")
    assert "dates[0].date" in reply.body["error"]["fields"]


def test_a_date_line_that_is_not_an_object_is_400(api, admin):
    # Given a dates list holding a string
    # When an admin creates the concert
    reply = api.post("/admin/concerts", {"title": "t", "dates": ["2031-05-01"]}, token=admin)
    # Then it is refused, naming that line
    assert_error(reply, 400, "INVALID_REQUEST")
    assert any(k.startswith("dates[0]") for k in reply.body["error"]["fields"]), reply


def test_malformed_concert_json_is_400(api, admin):
    # Given a body that is not JSON
    # When an admin sends it
    reply = api.call("POST", "/admin/concerts", raw=b"{title:", token=admin)
    # Then it is refused
    assert_error(reply, 400, "INVALID_REQUEST")


def test_creating_a_concert_needs_the_admin_role(api):
    # Given a user without the admin role
    token = api.signup_login(new_name())
    # When they create a concert
    reply = api.post("/admin/concerts", {"title": "t", "dates": [_line()]}, token=token)
    # Then it is forbidden
    assert_error(reply, 403, "INVALID_PERMISSION")


def test_creating_a_concert_needs_a_token(api):
    # Given no token
    # When creating a concert
    reply = api.post("/admin/concerts", {"title": "t", "dates": [_line()]})
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


# -- GET /concerts ---------------------------------------------------------------------


def test_list_concerts_without_a_token_pages_in_ascending_id_order(api, admin):
    # Given three new concerts
    mine = [new_concert(api, admin) for _ in range(3)]
    # When anyone walks the list two at a time, without a token
    items = walk(api, "/concerts", limit=2)
    # Then every item is {id, title}, ids ascend without repeats, and ours are there
    assert all(set(i) == {"id", "title"} for i in items)
    ids = [i["id"] for i in items]
    assert ids == sorted(set(ids))
    listed = {i["id"]: i["title"] for i in items}
    for concert in mine:
        assert listed[concert["id"]] == concert["title"]


@pytest.mark.parametrize(("query", "field"), [("limit=0", "limit"), ("limit=101", "limit"),
                                              ("cursor=not-a-cursor", "cursor")])
def test_list_concerts_bad_paging_is_400(api, query, field):
    # Given a bad limit or cursor
    # When listing concerts
    reply = api.get(f"/concerts?{query}")
    # Then it is refused, naming the parameter
    assert_error(reply, 400, "INVALID_REQUEST")
    assert field in reply.body["error"]["fields"]


# -- POST /queue/tokens ----------------------------------------------------------------


def test_first_in_line_of_a_fresh_concert_is_active_201(api, cid):
    # Given a fresh concert and a user
    person = new_person(api)
    # When they take a queue token
    reply = api.post("/queue/tokens", {"concert_id": cid}, token=person.token)
    # Then they are ACTIVE at once, for the active time
    assert reply.status == 201, reply
    assert set(reply.body) == JOIN_FIELDS
    assert isinstance(reply.body["token"], str) and reply.body["token"]
    assert (reply.body["status"], reply.body["position"]) == ("ACTIVE", 0)
    until = parse_time(reply.body["active_until"])
    assert now() + timedelta(seconds=ACTIVE_TTL - 30) < until
    assert until < now() + timedelta(seconds=ACTIVE_TTL + 30)


def test_past_the_active_limit_users_wait_in_arrival_order(api, cid):
    # Given a fresh concert with 3 active places
    people = [new_person(api) for _ in range(5)]
    # When five users take tokens one after the other
    joined = [join(api, p, cid) for p in people]
    # Then the first 3 are ACTIVE and the next ones WAIT at positions 1, 2
    assert [(j["status"], j["position"]) for j in joined] == [
        ("ACTIVE", 0), ("ACTIVE", 0), ("ACTIVE", 0), ("WAITING", 1), ("WAITING", 2)]
    assert [j["active_until"] is None for j in joined] == [False, False, False, True, True]
    assert len({j["token"] for j in joined}) == 5


@pytest.mark.parametrize("index", [0, 4], ids=["active", "waiting"])
def test_asking_again_returns_the_same_token_200(api, cid, crowd, index):
    # Given a user already in line (active or waiting)
    person = crowd[index]
    held, before = person.queue[cid], place_of(api, person, cid)
    # When they ask for a token again
    again = join(api, person, cid, expect=200)
    # Then they get the same token and the same place, and nobody else moves
    assert set(again) == JOIN_FIELDS
    assert again["token"] == held
    assert (again["status"], again["position"]) == (before["status"], before["position"])
    assert place_of(api, crowd[3], cid)["position"] == 1


def test_asking_again_returns_the_same_token_string(api, cid):
    # Given a user holding a token
    person = new_person(api)
    first = join(api, person, cid)
    # When they ask again
    second = join(api, person, cid, expect=200)
    # Then the very same token comes back
    assert second["token"] == first["token"]
    assert second["active_until"] == first["active_until"]


def test_a_user_holds_one_token_per_concert(api, admin, cid):
    # Given a user in line for one concert
    person = new_person(api)
    first = join(api, person, cid)
    # When they take a token for another concert
    other = new_concert(api, admin)["id"]
    second = join(api, person, other)
    # Then it is a new, different token, and both work
    assert second["token"] != first["token"]
    assert place_of(api, person, cid)["status"] == "ACTIVE"
    assert place_of(api, person, other)["status"] == "ACTIVE"


def test_concurrent_joins_get_distinct_gap_free_places(api, cid):
    # Given ten users and a fresh concert
    people = [new_person(api) for _ in range(10)]
    # When they all take a token at once
    with ThreadPoolExecutor(10) as pool:
        joined = list(pool.map(lambda p: join(api, p, cid), people))
    # Then 3 are ACTIVE and the other 7 WAIT at positions 1..7, each once
    assert sum(j["status"] == "ACTIVE" for j in joined) == ACTIVE_LIMIT
    waiting = sorted(j["position"] for j in joined if j["status"] == "WAITING")
    assert waiting == list(range(1, 8))
    assert len({j["token"] for j in joined}) == 10


def test_concurrent_joins_of_one_user_give_one_token(api, cid):
    # Given one user
    person = new_person(api)
    # When they take a token five times at once
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(
            lambda _: api.post("/queue/tokens", {"concert_id": cid}, token=person.token),
            range(5)))
    # Then one answer is 201, the others 200, all with the same token and place
    assert sorted(r.status for r in replies) == [200, 200, 200, 200, 201], replies
    assert len({r.body["token"] for r in replies}) == 1
    assert {(r.body["status"], r.body["position"]) for r in replies} == {("ACTIVE", 0)}


@pytest.mark.parametrize("concert_id", [999_999_999_999, 2**53])
def test_token_for_an_unknown_concert_is_404(api, concert_id):
    # Given no such concert
    person = new_person(api)
    # When taking a token for it
    reply = api.post("/queue/tokens", {"concert_id": concert_id}, token=person.token)
    # Then it is not found
    assert_error(reply, 404, "CONCERT_NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "concert_id"), ({"concert_id": "1"}, "concert_id"), ({"concert_id": 0}, "concert_id"),
     ({"concert_id": True}, "concert_id"), ({"concert_id": 1.5}, "concert_id"),
     ({"concert_id": 1, "user_id": 1}, "user_id")],
    ids=["missing", "string", "zero", "bool", "float", "unknown-field"],
)
def test_token_with_a_bad_body_is_400(api, body, field):
    # Given a bad body
    person = new_person(api)
    # When taking a token
    reply = api.post("/queue/tokens", body, token=person.token)
    # Then it is refused, naming the field
    assert_error(reply, 400, "INVALID_REQUEST")
    assert field in reply.body["error"]["fields"]


def test_taking_a_token_needs_a_bearer_token(api, cid):
    # Given no access token
    # When taking a queue token
    reply = api.post("/queue/tokens", {"concert_id": cid})
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


# -- GET /queue/tokens/me --------------------------------------------------------------


def test_my_place_when_active(api, cid, fan):
    # Given an ACTIVE user
    # When they read their place
    reply = place(api, fan, cid)
    # Then they are ACTIVE, with nothing to wait for and the end of their active time
    assert reply.status == 200, reply
    assert set(reply.body) == PLACE_FIELDS
    assert (reply.body["status"], reply.body["position"]) == ("ACTIVE", 0)
    assert reply.body["estimated_wait_seconds"] == 0
    assert parse_time(reply.body["active_until"]) > now() + timedelta(seconds=ACTIVE_TTL - 30)


def test_my_place_when_waiting(api, cid, crowd):
    # Given two waiting users behind 3 active ones
    # When each reads their place
    fourth, fifth = place_of(api, crowd[3], cid), place_of(api, crowd[4], cid)
    # Then each is WAITING at their position with a non-negative whole-second estimate
    for body, position in ((fourth, 1), (fifth, 2)):
        assert set(body) == PLACE_FIELDS
        assert (body["status"], body["position"], body["active_until"]) == (
            "WAITING", position, None)
        assert isinstance(body["estimated_wait_seconds"], int)
        assert not isinstance(body["estimated_wait_seconds"], bool)
        assert body["estimated_wait_seconds"] >= 0
    assert fifth["estimated_wait_seconds"] >= fourth["estimated_wait_seconds"]


def test_reading_a_place_changes_no_one_s_place(api, cid, crowd):
    # Given 3 active and 2 waiting users
    # When the 4th polls twice and the 5th once
    first = place_of(api, crowd[3], cid)
    second = place_of(api, crowd[3], cid)
    fifth = place_of(api, crowd[4], cid)
    # Then nobody moved
    assert first["position"] == second["position"] == 1
    assert fifth["position"] == 2
    assert [place_of(api, p, cid)["status"] for p in crowd] == ["ACTIVE"] * 3 + ["WAITING"] * 2
    assert place_of(api, crowd[3], cid)["position"] == 1


def test_my_place_after_leaving_is_410(api, room, cid, fan):
    # Given an active user whose token has been ended
    room.leave(cid, fan.id)
    # When they read their place with it
    reply = place(api, fan, cid)
    # Then the token has expired
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")


def test_a_superseded_token_is_expired(api, room, cid, fan):
    # Given a user who left the line and joined again (a new token)
    old = fan.queue[cid]
    room.leave(cid, fan.id)
    new = join(api, fan, cid)["token"]
    assert new != old
    # When they read their place with the old token
    reply = api.get("/queue/tokens/me", token=fan.token, headers=qt(old))
    # Then it has expired, while the new one works
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")
    assert place_of(api, fan, cid)["status"] == "ACTIVE"


def _bad_queue_tokens() -> dict[str, Callable[[Person, Person, int], tuple[Person, str | None]]]:
    """Ways to present a queue token that is not the caller's valid token: (caller, token)."""
    return {
        "missing": lambda me, other, cid: (me, None),
        "empty": lambda me, other, cid: (me, ""),
        "garbage": lambda me, other, cid: (me, "not-a-token"),
        "forged": lambda me, other, cid: (me, forged_token(me, cid)),
        "access-token": lambda me, other, cid: (me, me.token),
        "someone-elses": lambda me, other, cid: (other, me.queue[cid]),
    }


BAD_TOKENS = _bad_queue_tokens()


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_my_place_with_an_invalid_queue_token_is_401(api, cid, crowd, case):
    # Given a queue token that is missing, unsigned by us, not a queue token, or not ours
    caller, token = BAD_TOKENS[case](crowd[0], crowd[1], cid)
    # When reading the place with it
    reply = api.get("/queue/tokens/me", token=caller.token, headers=qt(token))
    # Then it is refused as invalid
    assert_error(reply, 401, "QUEUE_TOKEN_INVALID")


def test_my_place_needs_a_bearer_token(api, cid, fan):
    # Given a valid queue token but no access token
    # When reading the place
    reply = api.get("/queue/tokens/me", headers=qt(fan.queue[cid]))
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


# -- promotion and expiry (the scheduler's work, run by hand) ---------------------------


def test_without_promotion_a_freed_place_is_not_taken(api, room, cid, crowd):
    # Given 3 active and 2 waiting users, one active user's token ended
    room.leave(cid, crowd[0].id)
    # When the waiting users poll (and no promotion has run)
    # Then they are still waiting where they were
    fourth = place_of(api, crowd[3], cid)
    assert (fourth["status"], fourth["position"]) == ("WAITING", 1)
    assert place_of(api, crowd[4], cid)["position"] == 2


@pytest.mark.parametrize("ending", ["leave", "payment"])
def test_promotion_gives_a_freed_place_to_the_head_of_the_line(api, room, cid, crowd, ending):
    # Given 3 active and 2 waiting users, and one active user's token ended
    first = crowd[0]
    if ending == "payment":
        charge(api, first.token, PRICE1)
        succeeded(pay(api, first, hold(api, first, cid), first.queue[cid]))
    else:
        room.leave(cid, first.id)
    # When the promotion runs
    promoted, _, _ = room.promote(cid, utcnow())
    # Then the 4th is ACTIVE (for the active time) and the 5th moves up to position 1
    assert promoted == 1
    fourth = place_of(api, crowd[3], cid)
    assert (fourth["status"], fourth["position"], fourth["estimated_wait_seconds"]) == (
        "ACTIVE", 0, 0)
    assert parse_time(fourth["active_until"]) > now() + timedelta(seconds=ACTIVE_TTL - 30)
    fifth = place_of(api, crowd[4], cid)
    assert (fifth["status"], fifth["position"]) == ("WAITING", 1)
    assert fifth["estimated_wait_seconds"] >= 0
    again = join(api, crowd[3], cid, expect=200)
    assert (again["status"], again["token"]) == ("ACTIVE", crowd[3].queue[cid])


def test_a_promoted_user_can_see_the_dates(api, room, cid, crowd):
    # Given a waiting user refused the dates
    refused = api.get(f"/concerts/{cid}/dates", token=crowd[3].token,
                      headers=qt(crowd[3].queue[cid]))
    assert_error(refused, 403, "QUEUE_TOKEN_NOT_ACTIVE")
    # When a place frees and the promotion runs
    room.leave(cid, crowd[0].id)
    room.promote(cid, utcnow())
    # Then the same token now opens the dates
    assert {d["date"] for d in dates_of(api, crowd[3], cid)} == {DAY1, DAY2}


def test_a_waiting_user_who_stops_polling_loses_their_place(api, room, cid, crowd):
    # Given 2 waiting users who have not polled for longer than the idle time
    room.promote(cid, utcnow() + timedelta(seconds=IDLE_TTL + 10))
    # When the 4th polls with their token
    reply = place(api, crowd[3], cid)
    # Then it has expired, the active users are untouched, and joining again starts afresh
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")
    assert place_of(api, crowd[0], cid)["status"] == "ACTIVE"
    old = crowd[3].queue[cid]
    again = join(api, crowd[3], cid, expect=201)
    assert again["token"] != old
    assert (again["status"], again["position"]) == ("WAITING", 1)


def test_an_active_token_ends_after_the_active_time(api, room, cid, fan):
    # Given an active user whose active time is over
    room.promote(cid, utcnow() + timedelta(seconds=ACTIVE_TTL + 5))
    # When they poll
    reply = place(api, fan, cid)
    # Then the token has expired and it no longer opens the dates
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")
    dates = api.get(f"/concerts/{cid}/dates", token=fan.token, headers=qt(fan.queue[cid]))
    assert_error(dates, 410, "QUEUE_TOKEN_EXPIRED")


# -- GET /concerts/{id}/dates ----------------------------------------------------------


def test_dates_for_an_active_user(api, cid, fan):
    # Given an active user of a concert with two dates
    # When they list the dates
    reply = api.get(f"/concerts/{cid}/dates", token=fan.token, headers=qt(fan.queue[cid]))
    # Then both dates come with their price and 50 seats free
    assert reply.status == 200, reply
    assert sorted(reply.body["items"], key=lambda d: d["date"]) == [
        {"date": DAY1, "seat_price": PRICE1, "available_seats": 50},
        {"date": DAY2, "seat_price": PRICE2, "available_seats": 50},
    ]


def test_a_held_seat_is_not_available(api, cid, fan):
    # Given an active user
    # When they hold a seat on the first date
    hold(api, fan, cid, DAY1, 7)
    # Then that date has 49 seats left and the other still 50
    assert {d["date"]: d["available_seats"] for d in dates_of(api, fan, cid)} == {
        DAY1: 49, DAY2: 50}


def test_a_sold_out_date_is_not_listed(api, database, cid, fan):
    # Given every seat of the first date sold
    with database.connection_context():
        day = ConcertDate.get((ConcertDate.concert == cid) & (ConcertDate.date == date(2031, 5, 1)))
        moment = utcnow()
        Reservation.insert_many([
            {"user": fan.id, "concert_date": day.id, "seat_no": n, "status": "CONFIRMED",
             "price": PRICE1, "created_at": moment, "expires_at": moment, "paid_at": moment}
            for n in range(1, 51)]).execute()
    # When listing the dates
    items = dates_of(api, fan, cid)
    # Then only the second date is there
    assert items == [{"date": DAY2, "seat_price": PRICE2, "available_seats": 50}]


@pytest.mark.parametrize("concert_id", ["abc", "0", "-1"])
def test_dates_of_a_malformed_concert_id_is_404(api, cid, fan, concert_id):
    # Given a path id that no concert can have
    # When listing its dates
    reply = api.get(f"/concerts/{concert_id}/dates", token=fan.token,
                    headers=qt(fan.queue[cid]))
    # Then it is not found
    assert_error(reply, 404, "CONCERT_NOT_FOUND")


def test_dates_need_a_bearer_token(api, cid, fan):
    # Given a valid queue token but no access token
    # When listing the dates
    reply = api.get(f"/concerts/{cid}/dates", headers=qt(fan.queue[cid]))
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


# -- GET /concerts/{id}/dates/{date}/seats ---------------------------------------------


def test_seats_of_a_date(api, cid, fan):
    # Given an active user
    # When they read the seats of the second date
    reply = api.get(f"/concerts/{cid}/dates/{DAY2}/seats", token=fan.token,
                    headers=qt(fan.queue[cid]))
    # Then seats 1..50 are all available at the date's price
    assert reply.status == 200, reply
    assert reply.body["items"] == [{"seat_no": n, "price": PRICE2, "status": "AVAILABLE"}
                                   for n in range(1, 51)]


@pytest.mark.parametrize("day", ["2031-05-03", "2031-13-01", "2031-02-30", "tomorrow", "x"])
def test_seats_of_an_unknown_or_malformed_date_is_404(api, cid, fan, day):
    # Given a date the concert does not have (or not a date at all)
    # When reading its seats
    reply = api.get(f"/concerts/{cid}/dates/{day}/seats", token=fan.token,
                    headers=qt(fan.queue[cid]))
    # Then the schedule is not found
    assert_error(reply, 404, "SCHEDULE_NOT_FOUND")


@pytest.mark.parametrize("spelling", ["basic", "week"])
def test_seats_of_a_date_not_written_yyyy_mm_dd_is_404(api, cid, fan, spelling):
    # Given one of the concert's dates written another way than YYYY-MM-DD
    year, week, weekday = date(2031, 5, 1).isocalendar()
    day = {"basic": "20310501", "week": f"{year}-W{week:02d}-{weekday}"}[spelling]
    # When reading its seats
    reply = api.get(f"/concerts/{cid}/dates/{day}/seats", token=fan.token,
                    headers=qt(fan.queue[cid]))
    # Then it is malformed, so not found
    assert_error(reply, 404, "SCHEDULE_NOT_FOUND")


def test_seats_need_a_bearer_token(api, cid, fan):
    # Given a valid queue token but no access token
    # When reading the seats
    reply = api.get(f"/concerts/{cid}/dates/{DAY1}/seats", headers=qt(fan.queue[cid]))
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


# -- queue-token refusals of every guarded endpoint --------------------------------------


@dataclass
class Line:
    """A fresh concert: a, b, c ACTIVE, d WAITING; ``rid`` a seat held by a."""

    api: Api
    admin: str
    cid: int
    a: Person
    b: Person
    c: Person
    d: Person
    rid: int


@pytest.fixture
def line(api, admin, cid) -> Line:
    a, b, c, d = (new_person(api) for _ in range(4))
    for person in (a, b, c, d):
        join(api, person, cid)
    return Line(api, admin, cid, a, b, c, d, hold(api, a, cid, DAY1, 1))


GUARDED = ("dates", "seats", "reserve", "pay")


def call_guarded(line: Line, endpoint: str, caller: Person, token: str | None) -> Reply:
    """Call a Queue-Token guarded endpoint of the line's concert as ``caller`` with ``token``."""
    api, headers = line.api, qt(token)
    if endpoint == "dates":
        return api.get(f"/concerts/{line.cid}/dates", token=caller.token, headers=headers)
    if endpoint == "seats":
        return api.get(f"/concerts/{line.cid}/dates/{DAY1}/seats", token=caller.token,
                       headers=headers)
    if endpoint == "reserve":
        return api.post("/reservations", {"concert_id": line.cid, "date": DAY1, "seat_no": 2},
                        token=caller.token, headers=headers)
    return api.post(f"/reservations/{line.rid}/payment", token=caller.token, headers=headers)


@pytest.mark.parametrize("endpoint", GUARDED)
def test_a_waiting_token_is_403_not_active(line, endpoint):
    # Given a user still waiting in line
    # When they use their token
    reply = call_guarded(line, endpoint, line.d, line.d.queue[line.cid])
    # Then they are told it is not active yet
    assert_error(reply, 403, "QUEUE_TOKEN_NOT_ACTIVE")


@pytest.mark.parametrize("endpoint", GUARDED)
def test_an_active_token_of_another_concert_is_403_not_active(line, endpoint):
    # Given a user active for another concert only (for pay: the seat's owner, active
    # for both, presenting the other concert's token)
    other = new_concert(line.api, line.admin)["id"]
    caller = line.a if endpoint == "pay" else new_person(line.api)
    assert join(line.api, caller, other)["status"] == "ACTIVE"
    # When they use that token on this concert
    reply = call_guarded(line, endpoint, caller, caller.queue[other])
    # Then it is not active for this concert
    assert_error(reply, 403, "QUEUE_TOKEN_NOT_ACTIVE")


@pytest.mark.parametrize("endpoint", GUARDED)
def test_an_ended_token_is_410_expired(line, room, endpoint):
    # Given an active user whose token has ended
    room.leave(line.cid, line.a.id)
    # When they use it
    reply = call_guarded(line, endpoint, line.a, line.a.queue[line.cid])
    # Then it has expired
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
@pytest.mark.parametrize("endpoint", GUARDED)
def test_an_invalid_queue_token_is_401(line, endpoint, case):
    # Given a queue token that is missing, unsigned by us, not a queue token, or not ours
    caller, token = BAD_TOKENS[case](line.a, line.b, line.cid)
    # When using it
    reply = call_guarded(line, endpoint, caller, token)
    # Then it is refused as invalid
    assert_error(reply, 401, "QUEUE_TOKEN_INVALID")


def test_refused_reservations_and_payments_change_nothing(line, room):
    # Given a waiting user and an active user with an ended token, both refused
    call_guarded(line, "reserve", line.d, line.d.queue[line.cid])
    call_guarded(line, "reserve", line.b, "not-a-token")
    room.leave(line.cid, line.a.id)
    call_guarded(line, "pay", line.a, line.a.queue[line.cid])
    # When an active user reads the seats
    seats = seat_map(line.api, line.c, line.cid)
    # Then seat 1 is still only held, seat 2 still free, and no job was recorded for them
    assert (seats[1], seats[2]) == ("HELD", "AVAILABLE")
    for person in (line.b, line.d):
        assert line.api.get("/jobs", token=person.token).body["items"] == []


# -- POST /reservations ----------------------------------------------------------------


def test_reserve_is_accepted_as_a_job_202(api, cid, fan):
    # Given an active user
    # When they reserve a seat (without waiting)
    reply = api.post("/reservations", {"concert_id": cid, "date": DAY1, "seat_no": 12},
                     token=fan.token, headers=qt(fan.queue[cid]))
    # Then a concert.reserve job is accepted
    assert reply.status == 202, reply
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.headers["retry-after"] == "1"
    assert reply.body["type"] == "concert.reserve"
    assert reply.body["status"] in ("queued", "running", "succeeded")
    job = api.wait_job(reply.body["id"], fan.token)
    assert job["type"] == "concert.reserve"


def test_reserve_holds_the_seat_for_5_minutes(api, cid, fan):
    # Given an active user
    # When they reserve seat 12 of the first date
    result = succeeded(reserve(api, fan, cid, DAY1, 12))
    # Then the seat is HELD by a new reservation for about 5 minutes
    assert set(result) == {"reservation_id", "status", "expires_at"}
    assert isinstance(result["reservation_id"], int)
    assert result["status"] == "HELD"
    expires = parse_time(result["expires_at"])
    assert now() + timedelta(minutes=4) < expires < now() + timedelta(minutes=6)


def test_a_held_seat_shows_held_to_everyone(api, cid, crowd):
    # Given one active user holding seat 12 of the first date
    hold(api, crowd[0], cid, DAY1, 12)
    # When another active user reads the seats
    seats = seat_map(api, crowd[1], cid, DAY1)
    # Then seat 12 is HELD and every other seat (and the other date) is AVAILABLE
    assert seats == {n: ("HELD" if n == 12 else "AVAILABLE") for n in range(1, 51)}
    assert set(seat_map(api, crowd[1], cid, DAY2).values()) == {"AVAILABLE"}


def test_a_held_seat_cannot_be_reserved_again(api, cid, crowd):
    # Given seat 5 held by one user
    hold(api, crowd[0], cid, DAY1, 5)
    # When another user, and the holder themselves, reserve it
    theirs = reserve(api, crowd[1], cid, DAY1, 5)
    own = reserve(api, crowd[0], cid, DAY1, 5)
    # Then both are refused: the seat is not available
    assert_failed(theirs, "SEAT_NOT_AVAILABLE")
    assert_failed(own, "SEAT_NOT_AVAILABLE")


def test_the_same_seat_number_on_another_date_is_a_different_seat(api, cid, crowd):
    # Given seat 5 of the first date held
    hold(api, crowd[0], cid, DAY1, 5)
    # When someone reserves seat 5 of the second date
    result = succeeded(reserve(api, crowd[1], cid, DAY2, 5))
    # Then it is held
    assert result["status"] == "HELD"


def test_concurrent_reservations_of_one_seat_have_one_winner(api, cid, crowd):
    # Given 3 active users
    actives = crowd[:3]
    # When all of them reserve the same seat at once
    with ThreadPoolExecutor(3) as pool:
        jobs = list(pool.map(lambda p: reserve(api, p, cid, DAY1, 33), actives))
    # Then exactly one holds it and the others are told it is not available
    assert sorted(j["status"] for j in jobs) == ["failed", "failed", "succeeded"]
    for job in jobs:
        if job["status"] == "failed":
            assert_failed(job, "SEAT_NOT_AVAILABLE")
    assert seat_map(api, crowd[0], cid)[33] == "HELD"


def test_reserving_a_date_the_concert_does_not_have_fails_schedule_not_found(api, cid, fan):
    # Given an active user
    # When they reserve a seat on a date the concert does not play
    job = reserve(api, fan, cid, "2031-05-03", 1)
    # Then the job fails: no such schedule
    assert_failed(job, "SCHEDULE_NOT_FOUND")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"seat_no": 0}, "seat_no"), ({"seat_no": 51}, "seat_no"), ({"seat_no": "1"}, "seat_no"),
     ({"seat_no": 1.5}, "seat_no"), ({"date": "2031-02-30"}, "date"),
     ({"date": "2031/05/01"}, "date"), ({"date": "2031-5-1"}, "date"), ({"date": 20310501}, "date"),
     ({"concert_id": 0}, "concert_id"), ({"concert_id": "x"}, "concert_id"),
     ({"user_id": 1}, "user_id")],
    ids=["seat-0", "seat-51", "string-seat", "float-seat", "impossible-date", "slashed-date",
         "short-date", "int-date", "zero-concert", "string-concert", "unknown-field"],
)
def test_reserve_with_a_bad_body_is_400(api, cid, fan, change, field):
    # Given a reservation body that is wrong in one way
    body = {"concert_id": cid, "date": DAY1, "seat_no": 1} | change
    # When an active user sends it
    reply = api.post("/reservations", body, token=fan.token, headers=qt(fan.queue[cid]))
    # Then it is refused, naming the field, and nothing is queued
    assert_error(reply, 400, "INVALID_REQUEST")
    assert field in reply.body["error"]["fields"]
    assert api.get("/jobs", token=fan.token).body["items"] == []


@pytest.mark.parametrize("missing", ["concert_id", "date", "seat_no"])
def test_reserve_names_a_missing_field(api, cid, fan, missing):
    # Given a body without one field
    body = {"concert_id": cid, "date": DAY1, "seat_no": 1}
    del body[missing]
    # When reserving
    reply = api.post("/reservations", body, token=fan.token, headers=qt(fan.queue[cid]))
    # Then it is refused, naming the field
    assert_error(reply, 400, "INVALID_REQUEST")
    assert missing in reply.body["error"]["fields"]


def test_reserve_date_must_be_written_yyyy_mm_dd(api, cid, fan):
    # Given the first date in the ISO week form (10 characters, but not YYYY-MM-DD)
    year, week, weekday = date(2031, 5, 1).isocalendar()
    body = {"concert_id": cid, "date": f"{year}-W{week:02d}-{weekday}", "seat_no": 1}
    # When an active user reserves with it
    reply = api.post("/reservations", body, token=fan.token, headers=WAIT | qt(fan.queue[cid]))
    # Then it is refused like any other date that is not YYYY-MM-DD
    assert_error(reply, 400, "INVALID_REQUEST")
    assert "date" in reply.body["error"]["fields"]


def test_reserve_needs_a_bearer_token(api, cid, fan):
    # Given a valid queue token but no access token
    # When reserving
    reply = api.post("/reservations", {"concert_id": cid, "date": DAY1, "seat_no": 1},
                     headers=qt(fan.queue[cid]))
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")


def test_a_hold_past_its_deadline_frees_the_seat(api, database, cid, crowd):
    # Given seat 9 held by one user, and the hold past its 5 minutes
    rid = hold(api, crowd[0], cid, DAY1, 9)
    with database.connection_context():
        Reservation.update(expires_at=datetime(2000, 1, 1)).where(Reservation.id == rid).execute()
    # When another user looks and reserves it
    before = seat_map(api, crowd[1], cid)[9]
    result = succeeded(reserve(api, crowd[1], cid, DAY1, 9))
    # Then it was AVAILABLE and is now held by them
    assert before == "AVAILABLE"
    assert result["reservation_id"] != rid
    assert seat_map(api, crowd[1], cid)[9] == "HELD"


def test_reserve_with_the_same_idempotency_key_holds_once(api, cid, fan):
    # Given a reservation sent with an Idempotency-Key, finished
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"concert_id": cid, "date": DAY1, "seat_no": 20}
    headers = WAIT | key | qt(fan.queue[cid])
    first = finish(api, api.post("/reservations", body, token=fan.token, headers=headers),
                   fan.token)
    # When the same request is sent again
    again = api.post("/reservations", body, token=fan.token, headers=headers)
    # Then the original job comes back and the seat is held once (not SEAT_NOT_AVAILABLE)
    assert again.status == 200, again
    assert again.body["id"] == first["id"]
    assert again.body["result"] == succeeded(first)
    assert {d["date"]: d["available_seats"] for d in dates_of(api, fan, cid)}[DAY1] == 49


# -- POST /reservations/{id}/payment ---------------------------------------------------


def test_pay_is_accepted_as_a_job_202(api, cid, fan):
    # Given a held seat and enough points
    charge(api, fan.token, PRICE1)
    rid = hold(api, fan, cid)
    # When paying without waiting
    reply = api.post(f"/reservations/{rid}/payment", token=fan.token, headers=qt(fan.queue[cid]))
    # Then a concert.pay job is accepted
    assert reply.status == 202, reply
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.headers["retry-after"] == "1"
    assert reply.body["type"] == "concert.pay"
    assert api.wait_job(reply.body["id"], fan.token)["status"] == "succeeded"


def test_pay_confirms_the_seat_and_spends_the_points(api, cid, fan):
    # Given 5,000 points and a held seat of 1,000
    charge(api, fan.token, 5000)
    rid = hold(api, fan, cid, DAY1, 3)
    # When paying
    result = succeeded(pay(api, fan, rid, fan.queue[cid]))
    # Then the reservation is CONFIRMED and the price is spent
    assert result == {"reservation_id": rid, "status": "CONFIRMED", "balance": 5000 - PRICE1}
    assert balance(api, fan.token) == 5000 - PRICE1
    history = api.get("/points/history", token=fan.token).body["items"]
    assert history[0]["type"] == "USE"
    assert abs(history[0]["amount"]) == PRICE1
    assert history[0]["balance_after"] == 5000 - PRICE1


def test_a_paid_seat_shows_sold(api, cid, crowd):
    # Given a user who paid for seat 3
    buyer = crowd[0]
    charge(api, buyer.token, PRICE1)
    succeeded(pay(api, buyer, hold(api, buyer, cid, DAY1, 3), buyer.queue[cid]))
    # When another active user reads the seats and dates
    seats = seat_map(api, crowd[1], cid)
    # Then seat 3 is SOLD and counted as taken
    assert seats[3] == "SOLD"
    assert [s for s in seats.values() if s != "AVAILABLE"] == ["SOLD"]
    assert {d["date"]: d["available_seats"] for d in dates_of(api, crowd[1], cid)}[DAY1] == 49


def test_payment_ends_the_queue_token(api, cid, fan):
    # Given a user who paid for their seat
    charge(api, fan.token, PRICE1)
    succeeded(pay(api, fan, hold(api, fan, cid), fan.queue[cid]))
    # When they read their place with the same token
    reply = place(api, fan, cid)
    # Then the token has expired
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")


def test_paying_again_with_the_same_token_is_410(api, cid, fan):
    # Given a user who paid for their seat
    charge(api, fan.token, 5000)
    rid = hold(api, fan, cid)
    succeeded(pay(api, fan, rid, fan.queue[cid]))
    # When they pay again with the same queue token
    reply = api.post(f"/reservations/{rid}/payment", token=fan.token,
                     headers=WAIT | qt(fan.queue[cid]))
    # Then the door refuses the ended token and nothing more is spent
    assert_error(reply, 410, "QUEUE_TOKEN_EXPIRED")
    assert balance(api, fan.token) == 5000 - PRICE1


def test_paying_a_paid_reservation_fails_already_paid(api, cid, fan):
    # Given a user who paid for their seat and then joined the line again (a new token)
    charge(api, fan.token, 5000)
    rid = hold(api, fan, cid)
    succeeded(pay(api, fan, rid, fan.queue[cid]))
    assert join(api, fan, cid)["status"] == "ACTIVE"
    # When they pay the same reservation again
    job = pay(api, fan, rid, fan.queue[cid])
    # Then it fails: already paid, and nothing more is spent
    assert_failed(job, "RESERVATION_ALREADY_PAID")
    assert balance(api, fan.token) == 5000 - PRICE1


def test_paying_without_enough_points_fails_and_changes_nothing(api, cid, fan):
    # Given 500 points and a held seat of 1,000
    charge(api, fan.token, 500)
    rid = hold(api, fan, cid, DAY1, 4)
    # When paying
    job = pay(api, fan, rid, fan.queue[cid])
    # Then it fails: insufficient points; balance, seat and token are as they were
    assert_failed(job, "INSUFFICIENT_POINTS")
    assert balance(api, fan.token) == 500
    assert seat_map(api, fan, cid)[4] == "HELD"
    assert place_of(api, fan, cid)["status"] == "ACTIVE"


def test_after_insufficient_points_charging_lets_the_payment_succeed(api, cid, fan):
    # Given a payment refused for want of points
    rid = hold(api, fan, cid, DAY1, 4)
    assert_failed(pay(api, fan, rid, fan.queue[cid]), "INSUFFICIENT_POINTS")
    # When the user charges points and pays again with the same token
    charge(api, fan.token, PRICE1)
    result = succeeded(pay(api, fan, rid, fan.queue[cid]))
    # Then the seat is confirmed
    assert (result["status"], result["balance"]) == ("CONFIRMED", 0)


def test_a_free_seat_is_confirmed_without_points(api, admin):
    # Given a concert whose seats cost nothing, and an active user with no points
    cid = new_concert(api, admin, [{"date": DAY1, "seat_price": 0}])["id"]
    person = new_person(api)
    join(api, person, cid)
    rid = hold(api, person, cid)
    # When paying
    result = succeeded(pay(api, person, rid, person.queue[cid]))
    # Then it is confirmed and the balance is untouched
    assert result == {"reservation_id": rid, "status": "CONFIRMED", "balance": 0}


def test_paying_an_unknown_reservation_fails_not_found(api, cid, fan):
    # Given an active user with points
    charge(api, fan.token, 5000)
    # When paying a reservation that does not exist
    job = pay(api, fan, 999_999_999_999, fan.queue[cid])
    # Then it fails: not found, and nothing is spent
    assert_failed(job, "RESERVATION_NOT_FOUND")
    assert balance(api, fan.token) == 5000


def test_paying_someone_elses_reservation_fails_not_found(api, cid, crowd):
    # Given a seat held by one user, and another active user with points
    owner, payer = crowd[0], crowd[1]
    rid = hold(api, owner, cid, DAY1, 6)
    charge(api, payer.token, 5000)
    # When the other user pays it
    job = pay(api, payer, rid, payer.queue[cid])
    # Then it fails: not found for them; their points and the owner's hold are untouched
    assert_failed(job, "RESERVATION_NOT_FOUND")
    assert balance(api, payer.token) == 5000
    assert seat_map(api, owner, cid)[6] == "HELD"
    assert place_of(api, payer, cid)["status"] == "ACTIVE"


@pytest.mark.parametrize("reservation_id", ["abc", "0", "-1", "99999999999999999999"])
def test_paying_a_malformed_reservation_id_is_404(api, cid, fan, reservation_id):
    # Given a path id that no reservation can have
    # When paying it
    reply = api.post(f"/reservations/{reservation_id}/payment", token=fan.token,
                     headers=qt(fan.queue[cid]))
    # Then it is not found at once
    assert_error(reply, 404, "RESERVATION_NOT_FOUND")


def test_paying_an_expired_hold_fails_and_spends_nothing(api, database, cid, fan):
    # Given 5,000 points and a hold past its 5 minutes
    charge(api, fan.token, 5000)
    rid = hold(api, fan, cid, DAY1, 8)
    with database.connection_context():
        Reservation.update(expires_at=datetime(2000, 1, 1)).where(Reservation.id == rid).execute()
    # When paying it
    job = pay(api, fan, rid, fan.queue[cid])
    # Then it fails: expired; the balance is unchanged and the seat is free again
    assert_failed(job, "RESERVATION_EXPIRED")
    assert balance(api, fan.token) == 5000
    assert seat_map(api, fan, cid)[8] == "AVAILABLE"
    assert place_of(api, fan, cid)["status"] == "ACTIVE"


def test_pay_with_a_body_is_400(api, cid, fan):
    # Given a held seat
    rid = hold(api, fan, cid)
    # When paying with an unexpected body field
    reply = api.post(f"/reservations/{rid}/payment", {"amount": 1}, token=fan.token,
                     headers=qt(fan.queue[cid]))
    # Then it is refused, naming the field
    assert_error(reply, 400, "INVALID_REQUEST")
    assert "amount" in reply.body["error"]["fields"]


def test_pay_needs_a_bearer_token(api, cid, fan):
    # Given a held seat and a valid queue token, but no access token
    rid = hold(api, fan, cid)
    # When paying
    reply = api.post(f"/reservations/{rid}/payment", headers=qt(fan.queue[cid]))
    # Then it is unauthorized
    assert_error(reply, 401, "UNAUTHORIZED")
