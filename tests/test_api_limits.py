"""Contract tests for the abuse limits: failed logins, phone codes, seat holds.

Binding contract: /work/shared/API.md, sections "Limits", "Users and auth" and "Concert
reservation".

The module runs its own web app and worker (in this process) on a Redis key space of
its own, so the budgets it spends (every request comes from 127.0.0.1) touch no other
module, and with a fixed clock: each test ends by moving it past every window.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import peewee
import pytest
import redis

from db.models import Reservation
from jobs import concerts, users
from jobs.clock import FixedClock, utcnow
from tests.inprocess import InProcessStack
from tests.support import Api, assert_failed, finish, succeeded

PASSWORD = "password123"
WINDOW = 600
DAY = "2031-07-01"


def new_name() -> str:
    """A username no other test uses."""
    return f"l_{uuid.uuid4().hex[:10]}"


def new_phone() -> str:
    """A phone number no other test uses."""
    return f"+8210{uuid.uuid4().int % 10**8:08d}"


def login(api: Api, username: str, password: str = PASSWORD, headers: dict | None = None):
    """``POST /users/login``; the reply, whatever it is."""
    return api.post("/users/login", {"username": username, "password": password},
                    headers=headers)


def assert_limited(reply, retry_after: int) -> None:
    """429 RATE_LIMITED with the given Retry-After (seconds)."""
    assert reply.status == 429, reply
    assert reply.code == "RATE_LIMITED", reply
    assert reply.headers["retry-after"] == str(retry_after), reply.headers


@pytest.fixture(scope="module")
def door_clock() -> FixedClock:
    """The web app's clock: its limits read it."""
    return FixedClock(utcnow().replace(microsecond=0))


@pytest.fixture(scope="module")
def limits_stack(process_env: dict[str, str], redis_prefix: str,
                 door_clock: FixedClock) -> Iterator[InProcessStack]:
    """Web and worker on a key space of their own, the door on the fixed clock."""
    prefix = f"{redis_prefix}-limits"
    s = InProcessStack({**process_env, "REDIS_PREFIX": prefix,
                        "LOGIN_FAIL_LIMIT_ADDRESS": "50"}, clock=door_clock)
    try:
        s.start_worker(processes=1, threads=8)
        s.start_web()
        yield s
    finally:
        s.stop()
        client = redis.Redis.from_url(process_env["REDIS_URL"])
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def api(limits_stack: InProcessStack, door_clock: FixedClock) -> Iterator[Api]:
    yield limits_stack.api
    door_clock.advance(seconds=WINDOW + 1)  # every budget spent by the test is free again


@pytest.fixture
def password_checks(monkeypatch) -> list[str]:
    """The passwords the door checked (it runs in this process)."""
    checked: list[str] = []
    real = users.verify_password

    def counting(password: str, stored: str) -> bool:
        checked.append(password)
        return real(password, stored)

    monkeypatch.setattr(users, "verify_password", counting)
    return checked


@pytest.fixture
def member(api: Api) -> str:
    """A signed-up user's name."""
    name = new_name()
    reply = api.post("/users/signup", {"username": name, "password": PASSWORD})
    assert reply.status == 201, reply
    return name


# -- failed logins per username --------------------------------------------------------


def test_after_ten_failures_the_username_is_refused_without_a_password_check(
        api, member, password_checks):
    # Given 10 failed logins for one username
    for _ in range(10):
        reply = login(api, member, "wrong-password")
        assert reply.code == "INVALID_PASSWORD", reply
    # When they log in again, even with the right password
    right, wrong = login(api, member), login(api, member, "wrong-password")
    # Then both are 429 for the whole window, and no password was checked for them
    assert_limited(right, WINDOW)
    assert_limited(wrong, WINDOW)
    assert "access_token" not in right.body
    assert password_checks == ["wrong-password"] * 10


def test_a_locked_username_opens_again_exactly_when_the_window_has_passed(
        api, member, door_clock):
    # Given 10 failed logins
    for _ in range(10):
        assert login(api, member, "wrong-password").status == 401
    # When 599 s, then 600 s have passed
    door_clock.advance(seconds=WINDOW - 1)
    almost = login(api, member)
    door_clock.advance(seconds=1)
    # Then at 599 s there is 1 s left; at 600 s the right password logs in
    assert_limited(almost, 1)
    assert login(api, member).status == 200


def test_a_successful_login_is_no_failure_and_resets_nothing(api, member):
    # Given 9 failures and then a successful login
    for _ in range(9):
        assert login(api, member, "wrong-password").status == 401
    assert login(api, member).status == 200
    # When a 10th failure comes, then another attempt
    tenth = login(api, member, "wrong-password")
    after = login(api, member)
    # Then the 10th was still checked (the success did not count), and it locks the name
    # (the success did not reset the 9 before it)
    assert tenth.code == "INVALID_PASSWORD", tenth
    assert_limited(after, WINDOW)


def test_logins_that_meet_a_fault_are_not_failures(api, member, monkeypatch):
    # Given 12 logins answered 503 because the database is down
    def database_down(username: str):
        raise peewee.OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(users, "find_user", database_down)
        for _ in range(12):
            assert login(api, member).code == "UNAVAILABLE"
    # When the database is back
    reply = login(api, member)
    # Then the user logs in: none of those attempts counted as a failed login
    assert reply.status == 200, reply


def test_other_usernames_are_not_locked_by_one_locked_name(api, member):
    # Given a locked username
    for _ in range(10):
        login(api, member, "wrong-password")
    assert login(api, member).status == 429
    # When another user logs in from the same address
    other = new_name()
    api.post("/users/signup", {"username": other, "password": PASSWORD})
    # Then they are let in (10 failures are far from the address's 50)
    assert login(api, other).status == 200


# -- failed logins per address ---------------------------------------------------------


def test_fifty_failures_from_one_address_lock_it_whatever_x_forwarded_for_claims(
        api, member, password_checks):
    # Given 49 failed logins for unknown usernames from one address, each claiming
    # another address in X-Forwarded-For (no proxy is trusted by default)
    for n in range(49):
        reply = login(api, new_name(), headers={"X-Forwarded-For": f"203.0.113.{n}"})
        assert reply.code == "USER_NOT_FOUND", reply
    # When a 50th fails, then a real member logs in with the right password
    fiftieth = login(api, new_name())
    reply = login(api, member)
    # Then the 50th was answered, and the address is locked for every username
    assert fiftieth.code == "USER_NOT_FOUND", fiftieth
    assert_limited(reply, WINDOW)
    assert password_checks == []


# -- phone codes -----------------------------------------------------------------------


def test_five_fresh_accounts_get_three_codes_to_one_number(api):
    # Given five fresh accounts and one phone number
    tokens = [api.signup_login(new_name()) for _ in range(5)]
    phone = new_phone()
    # When each asks for a code to that number
    replies = [api.post("/users/me/phone/code", {"phone": phone}, token=t) for t in tokens]
    # Then the first three are sent, the 4th and 5th are 429 for the window
    assert [r.status for r in replies[:3]] == [202, 202, 202], replies
    assert_limited(replies[3], WINDOW)
    assert_limited(replies[4], WINDOW)


def test_a_refused_code_spends_nothing_and_the_number_opens_after_the_window(api, door_clock):
    # Given a number that got 3 codes, and a 4th account refused for it
    phone = new_phone()
    for _ in range(3):
        token = api.signup_login(new_name())
        assert api.post("/users/me/phone/code", {"phone": phone}, token=token).status == 202
    fourth = api.signup_login(new_name())
    assert api.post("/users/me/phone/code", {"phone": phone}, token=fourth).status == 429
    # When the 4th account asks for 3 codes to its own numbers
    own = [api.post("/users/me/phone/code", {"phone": new_phone()}, token=fourth)
           for _ in range(3)]
    # Then all three go out: the refusal spent none of its budget
    assert [r.status for r in own] == [202, 202, 202], own
    # And after the window the number is served again (to a fresh account)
    door_clock.advance(seconds=WINDOW)
    later = api.signup_login(new_name())
    assert api.post("/users/me/phone/code", {"phone": phone}, token=later).status == 202


# -- seat holds ------------------------------------------------------------------------


@pytest.fixture
def concert_id(limits_stack) -> int:
    """A fresh concert with one date."""
    return concerts.create_concert(f"limits {uuid.uuid4().hex[:6]}",
                                   [(date.fromisoformat(DAY), 100)], utcnow())["id"]


@pytest.fixture
def fan(api: Api, concert_id: int) -> dict:
    """A user ACTIVE in the concert's line: token, id, queue token."""
    token = api.signup_login(new_name())
    joined = api.post("/queue/tokens", {"concert_id": concert_id}, token=token)
    assert joined.status == 201 and joined.body["status"] == "ACTIVE", joined
    me = api.get("/users/me", token=token)
    return {"token": token, "id": me.body["id"], "queue": joined.body["token"]}


def reserve(api: Api, fan: dict, concert_id: int, seat_no: int) -> dict:
    """``POST /reservations``; the terminal job."""
    reply = api.post("/reservations", {"concert_id": concert_id, "date": DAY,
                                       "seat_no": seat_no}, token=fan["token"],
                     headers={"Queue-Token": fan["queue"], "Prefer": "wait=10"})
    return finish(api, reply, fan["token"])


def live_holds(user_id: int) -> int:
    return Reservation.select().where((Reservation.user == user_id)
                                      & (Reservation.status == "HELD")).count()


def test_a_fifth_live_hold_fails_hold_limit_reached(api, concert_id, fan):
    # Given a fan holding 4 seats of a concert
    for seat in (1, 2, 3, 4):
        assert succeeded(reserve(api, fan, concert_id, seat))["status"] == "HELD"
    # When they reserve a 5th
    job = reserve(api, fan, concert_id, 5)
    # Then the job fails HOLD_LIMIT_REACHED and the seat stays available
    assert_failed(job, "HOLD_LIMIT_REACHED")
    assert live_holds(fan["id"]) == 4
    seats = api.get(f"/concerts/{concert_id}/dates/{DAY}/seats", token=fan["token"],
                    headers={"Queue-Token": fan["queue"]})
    assert seats.body["items"][4]["status"] == "AVAILABLE"


def test_ten_reservations_of_one_fan_at_once_leave_four_holds(api, concert_id, fan):
    # Given one fan sending 10 reservations for 10 seats at once
    with ThreadPoolExecutor(10) as pool:
        jobs = list(pool.map(lambda seat: reserve(api, fan, concert_id, seat), range(1, 11)))
    # Then exactly 4 hold a seat and 6 failed HOLD_LIMIT_REACHED
    outcomes = sorted(j["status"] if j["status"] == "succeeded" else j["error"]["code"]
                      for j in jobs)
    assert outcomes == ["HOLD_LIMIT_REACHED"] * 6 + ["succeeded"] * 4
    assert live_holds(fan["id"]) == 4
