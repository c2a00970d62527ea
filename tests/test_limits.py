"""Abuse limits: the Redis adapter at every edge (fixed clock), and the seat-hold limit in
the database (a fixed clock, and a race of one user's reservations).

Binding contract: /work/shared/API.md, section "Limits".
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from unittest import mock

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request

from db.models import Reservation
from db.settings import Settings
from jobs import concerts
from jobs.clock import FixedClock
from jobs.errors import DomainError
from tests.conftest import REDIS_URL
from tests.shop_fixtures import user_with_points
from web.views.users import client_address
from workers.limits import Limits, Rule

WINDOW = 600
DAY = date(2027, 3, 1)


@pytest.fixture
def client(redis_prefix: str) -> Iterator[redis.Redis]:
    """A sync client; the test's limit keys are deleted afterwards."""
    rds = redis.Redis.from_url(REDIS_URL)
    yield rds
    for key in rds.scan_iter(match=f"{redis_prefix}:lt-*", count=1000):
        rds.delete(key)
    rds.close()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A key space of this test alone."""
    return f"{redis_prefix}:lt-{uuid.uuid4().hex[:8]}"


def make_limits(client, prefix: str, clock: FixedClock) -> Limits:
    """The API's limits: 10 / 50 failed logins and 3 / 3 codes, per 10 minutes."""
    return Limits(client, prefix, clock, login_user=Rule(10, WINDOW),
                  login_address=Rule(50, WINDOW), phone_user=Rule(3, WINDOW),
                  phone_number=Rule(3, WINDOW))


@pytest.fixture
def limits(client, prefix, clock) -> Limits:
    return make_limits(client, prefix, clock)


def refusal(call, *args) -> int:
    """The Retry-After of a refused call (fails the test if it was let in)."""
    with pytest.raises(DomainError) as e:
        call(*args)
    assert e.value.code == "RATE_LIMITED"
    assert e.value.status == 429
    return e.value.retry_after


def fail_logins(limits: Limits, n: int, username: str = "alice",
                address: str = "10.0.0.1") -> None:
    """``n`` failed logins (each let in, and kept counted)."""
    for _ in range(n):
        limits.login_attempt(username, address)


# -- failed logins per username --------------------------------------------------------


def test_the_tenth_failure_is_let_in_and_the_eleventh_attempt_is_refused(limits):
    # Given 9 failed logins for one username
    fail_logins(limits, 9)
    # When a 10th attempt comes
    limits.login_attempt("alice", "10.0.0.1")
    # Then it was let in; the 11th is refused for the whole window
    assert refusal(limits.login_attempt, "alice", "10.0.0.1") == WINDOW


def test_a_username_is_refused_from_every_address(limits):
    # Given 10 failures for alice from one address
    fail_logins(limits, 10)
    # When she (or anyone) tries from another address
    # Then it is refused; another username from that address is let in
    assert refusal(limits.login_attempt, "alice", "192.0.2.7") == WINDOW
    limits.login_attempt("bob", "10.0.0.1")


def test_retry_after_counts_down_to_when_the_oldest_failure_ages_out(limits, clock):
    # Given 10 failures, one a second
    first = clock.now()
    for _ in range(10):
        limits.login_attempt("alice", "10.0.0.1")
        clock.advance(seconds=1)
    # When refused 9 s after the first failure, and then 0.3 s before it ages out
    at_ten = refusal(limits.login_attempt, "alice", "10.0.0.1")
    clock.at = first + timedelta(seconds=WINDOW - 0.3)
    at_the_edge = refusal(limits.login_attempt, "alice", "10.0.0.1")
    # Then Retry-After is what remains of the oldest failure's window, rounded up
    assert at_ten == WINDOW - 10
    assert at_the_edge == 1


def test_the_window_ends_exactly_600_seconds_after_a_failure(limits, clock):
    # Given 10 failures at one moment
    fail_logins(limits, 10)
    # When 599.999 s have passed, then 600 s
    clock.advance(seconds=WINDOW - 0.001)
    just_before = refusal(limits.login_attempt, "alice", "10.0.0.1")
    clock.advance(seconds=0.001)
    # Then the first is still refused (1 s to wait); at 600 s the attempt is let in
    assert just_before == 1
    limits.login_attempt("alice", "10.0.0.1")


def test_the_window_slides_failures_age_out_one_by_one(limits, clock):
    # Given 5 failures at t0 and 5 at t0 + 300 s
    fail_logins(limits, 5)
    clock.advance(seconds=300)
    fail_logins(limits, 5)
    # When the first five age out (t0 + 600 s)
    clock.advance(seconds=300)
    # Then exactly five more are let in, and the next waits for the second five
    fail_logins(limits, 5)
    assert refusal(limits.login_attempt, "alice", "10.0.0.1") == 300


def test_refused_attempts_do_not_extend_the_window(limits, clock):
    # Given a locked username that keeps being tried every minute
    fail_logins(limits, 10)
    for _ in range(9):
        clock.advance(seconds=60)
        refusal(limits.login_attempt, "alice", "10.0.0.1")
    # When the window of the 10 failures has passed
    clock.advance(seconds=60)
    # Then the username is let in again: refusals were never counted
    limits.login_attempt("alice", "10.0.0.1")


def test_an_attempt_given_back_is_not_a_failure(limits):
    # Given 9 failures and then 5 successful logins (each attempt given back)
    fail_logins(limits, 9)
    for _ in range(5):
        limits.give_back(limits.login_attempt("alice", "10.0.0.1"))
    # When a 10th failure comes
    limits.login_attempt("alice", "10.0.0.1")
    # Then it was let in (successes did not count), and the successes reset nothing
    assert refusal(limits.login_attempt, "alice", "10.0.0.1") == WINDOW


def test_concurrent_attempts_never_pass_the_budget(client, prefix, clock):
    # Given 40 threads trying one username at the same moment, each with its own adapter
    outcomes: list[str] = []
    start = threading.Barrier(40)

    def attempt() -> None:
        own = redis.Redis.from_url(REDIS_URL)
        try:
            start.wait(timeout=60)
            make_limits(own, prefix, clock).login_attempt("alice", "10.0.0.1")
            outcomes.append("in")
        except DomainError as e:
            outcomes.append(e.code)
        finally:
            own.close()

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 10 were let in to check a password
    assert sorted(outcomes) == ["RATE_LIMITED"] * 30 + ["in"] * 10


# -- failed logins per address ---------------------------------------------------------


def test_fifty_failures_from_one_address_lock_it_for_every_username(limits):
    # Given 49 failures from one address, each for another username
    for n in range(49):
        limits.login_attempt(f"user{n}", "10.0.0.1")
    # When the 50th comes, then a 51st for a fresh username
    limits.login_attempt("user49", "10.0.0.1")
    # Then the 50th was let in, the 51st refused; another address is let in
    assert refusal(limits.login_attempt, "fresh_user", "10.0.0.1") == WINDOW
    limits.login_attempt("fresh_user", "10.0.0.2")


def test_a_refusal_by_the_address_does_not_count_against_the_username(limits, clock):
    # Given a locked address, and alice with 9 failures from elsewhere
    for n in range(50):
        limits.login_attempt(f"user{n}", "10.0.0.1")
    fail_logins(limits, 9, address="10.0.0.9")
    # When alice is tried 5 times from the locked address
    for _ in range(5):
        refusal(limits.login_attempt, "alice", "10.0.0.1")
    # Then her budget is untouched: one more failure is let in elsewhere
    limits.login_attempt("alice", "10.0.0.9")
    assert refusal(limits.login_attempt, "alice", "10.0.0.9") == WINDOW


def test_retry_after_is_the_longer_wait_of_two_full_budgets(limits, clock):
    # Given alice's 10 failures at t0, and 50 from one address at t0 + 100 s
    fail_logins(limits, 10, address="10.0.0.9")
    clock.advance(seconds=100)
    for n in range(50):
        limits.login_attempt(f"user{n}", "10.0.0.1")
    # When alice tries from that address
    # Then she waits for the address (600 s), not only for her own failures (500 s)
    assert refusal(limits.login_attempt, "alice", "10.0.0.1") == WINDOW
    assert refusal(limits.login_attempt, "alice", "10.0.0.9") == WINDOW - 100


# -- phone codes -----------------------------------------------------------------------


def test_one_number_gets_three_codes_whoever_asks(limits):
    # Given 3 codes sent to one number by 3 different users
    for user_id in (1, 2, 3):
        limits.phone_code(user_id, "+821012345678")
    # When a 4th and a 5th fresh user ask for that number
    # Then both are refused for the window; another number is served
    assert refusal(limits.phone_code, 4, "+821012345678") == WINDOW
    assert refusal(limits.phone_code, 5, "+821012345678") == WINDOW
    limits.phone_code(4, "+821099999999")


def test_one_user_gets_three_codes_whatever_the_number(limits):
    # Given a user who got codes for 3 numbers
    for n in range(3):
        limits.phone_code(7, f"+82100000000{n}")
    # When they ask for a 4th number
    # Then it is refused
    assert refusal(limits.phone_code, 7, "+821000000009") == WINDOW


def test_a_refused_code_consumes_neither_budget(limits):
    # Given user 1 out of codes, and number N untouched
    for n in range(3):
        limits.phone_code(1, f"+82100000000{n}")
    # When user 1 asks for N five times (all refused)
    for _ in range(5):
        refusal(limits.phone_code, 1, "+821055555555")
    # Then N still has its three codes for others
    for user_id in (2, 3, 4):
        limits.phone_code(user_id, "+821055555555")
    assert refusal(limits.phone_code, 5, "+821055555555") == WINDOW


def test_a_number_has_one_budget_with_or_without_its_plus(limits):
    # Given 3 codes to a number written with +
    for user_id in (1, 2, 3):
        limits.phone_code(user_id, "+821012345678")
    # When it is asked for without the +
    # Then it is the same number
    assert refusal(limits.phone_code, 4, "821012345678") == WINDOW


def test_phone_budgets_free_up_exactly_at_the_window(limits, clock):
    # Given a number that got its 3 codes
    for user_id in (1, 2, 3):
        limits.phone_code(user_id, "+821012345678")
    # When 599 s, then 600 s have passed
    clock.advance(seconds=WINDOW - 1)
    assert refusal(limits.phone_code, 4, "+821012345678") == 1
    clock.advance(seconds=1)
    # Then at 600 s it is served again
    limits.phone_code(4, "+821012345678")


# -- one API, both clients; settings ---------------------------------------------------


def test_the_asyncio_client_runs_the_same_scripts(client, prefix, clock):
    # Given the adapter on an asyncio client (as at the door) and 10 failures through it
    async def scenario() -> tuple[int, str]:
        aio = aioredis.Redis.from_url(REDIS_URL)
        try:
            limits = make_limits(aio, prefix, clock)
            for _ in range(9):
                await limits.login_attempt("alice", "10.0.0.1")
            await limits.give_back(await limits.login_attempt("alice", "10.0.0.1"))
            await limits.login_attempt("alice", "10.0.0.1")
            try:
                await limits.login_attempt("alice", "10.0.0.1")
            except DomainError as e:
                return e.retry_after, e.code
            return 0, "let in"
        finally:
            await aio.aclose()

    # When an 11th attempt comes
    retry_after, code = asyncio.run(scenario())
    # Then it is refused, and the sync client sees the same state
    assert (code, retry_after) == ("RATE_LIMITED", WINDOW)
    assert refusal(make_limits(client, prefix, clock).login_attempt, "alice", "x") == WINDOW


def test_limits_come_from_the_environment(client, prefix, clock):
    # Given an environment that changes every limit
    env = {"LOGIN_FAIL_LIMIT_USER": "2", "LOGIN_FAIL_LIMIT_ADDRESS": "3",
           "LOGIN_FAIL_WINDOW": "60", "PHONE_CODE_RATE": "1", "PHONE_CODE_NUMBER_RATE": "2",
           "PHONE_CODE_RATE_WINDOW": "30", "TRUSTED_PROXY_HOPS": "1", "HOLD_LIMIT": "6"}
    settings = dataclasses.replace(Settings.from_env(env), redis_prefix=prefix)
    # When the adapter is built from them
    limits = Limits.from_settings(client, settings, clock)
    # Then each rule is the configured one
    assert (limits.login_user, limits.login_address) == (Rule(2, 60), Rule(3, 60))
    assert (limits.phone_user, limits.phone_number) == (Rule(1, 30), Rule(2, 30))
    assert settings.trusted_proxy_hops == 1
    fail_logins(limits, 2)
    assert refusal(limits.login_attempt, "alice", "10.0.0.1") == 60
    # And the defaults are the API's
    d = Settings.from_env({})
    assert (d.login_fail_limit_user, d.login_fail_limit_address, d.login_fail_window) == (
        10, 50, 600)
    assert (d.phone_code_rate, d.phone_code_number_rate, d.phone_code_rate_window) == (
        3, 3, 600)
    assert d.trusted_proxy_hops == 0


@pytest.mark.parametrize("rule", [(0, 600), (10, 0)])
def test_a_limit_must_let_something_in(rule):
    with pytest.raises(ValueError):
        Rule(*rule)


# -- the client address ----------------------------------------------------------------


PEER = "198.51.100.1"


def _request(forwarded: str | None = None):
    """A login request from ``PEER``, optionally with an X-Forwarded-For header."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (PEER, 40000) if name == "peername" else default)
    return make_mocked_request("POST", "/api/v1/users/login", headers=headers,
                               transport=transport)


def test_the_address_is_the_peer_unless_proxies_are_trusted():
    # Given a request whose client claims an address in X-Forwarded-For
    request = _request("203.0.113.9")
    # When no proxy is trusted (the default)
    # Then the claim is ignored: the address is the peer's
    assert client_address(request) == PEER
    assert client_address(_request(), 2) == PEER  # trusted, but no header: the peer


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [("203.0.113.9", 1, "203.0.113.9"),
     ("6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),  # the client's own entry is not believed
     ("6.6.6.6, 203.0.113.9, 10.0.0.2", 2, "203.0.113.9"),
     ("203.0.113.9", 3, "203.0.113.9")],  # fewer entries than proxies: the first proxy's
)
def test_behind_trusted_proxies_the_address_is_what_the_outermost_saw(forwarded, hops,
                                                                      expected):
    assert client_address(_request(forwarded), hops) == expected


# -- seat holds (the database) ---------------------------------------------------------


@pytest.fixture
def concert(clean_db, clock) -> int:
    return concerts.create_concert("Limit night", [(DAY, 100), (DAY + timedelta(1), 100)],
                                   clock.now())["id"]


def hold(db, uid: int, cid: int, seat: int, now, day: date = DAY, limit: int = 4) -> dict:
    with db.atomic():
        return concerts.reserve_seat(uid, cid, day, seat, now, limit)


def hold_refusal(*args, **kw) -> str:
    with pytest.raises(DomainError) as e:
        hold(*args, **kw)
    return e.value.code


def test_a_user_holds_four_seats_of_a_concert_and_the_fifth_is_refused(clean_db, clock,
                                                                       concert):
    # Given a user holding 3 seats, across both dates of a concert
    uid = user_with_points("holder", 0, clock.now())
    for seat, day in ((1, DAY), (2, DAY), (1, DAY + timedelta(1))):
        hold(clean_db, uid, concert, seat, clock.now(), day)
    # When they hold a 4th, then try a 5th
    hold(clean_db, uid, concert, 3, clock.now())
    # Then the 5th fails HOLD_LIMIT_REACHED and holds nothing
    assert hold_refusal(clean_db, uid, concert, 4, clock.now()) == "HOLD_LIMIT_REACHED"
    assert Reservation.select().where(Reservation.user == uid).count() == 4
    # And another user, or another concert, is unaffected
    other = user_with_points("other", 0, clock.now())
    hold(clean_db, other, concert, 4, clock.now())
    second = concerts.create_concert("Other night", [(DAY, 100)], clock.now())["id"]
    hold(clean_db, uid, second, 1, clock.now())


def test_expired_and_paid_holds_do_not_count(clean_db, clock, concert):
    # Given a user with 4 holds: one is paid, one lapses
    uid = user_with_points("payer", 10_000, clock.now())
    first = hold(clean_db, uid, concert, 1, clock.now())["reservation_id"]
    with clean_db.atomic():
        concerts.pay_reservation(uid, first, clock.now())
    for seat in (2, 3):
        hold(clean_db, uid, concert, seat, clock.now())
    clock.advance(minutes=1)
    hold(clean_db, uid, concert, 4, clock.now())
    # When the first three holds' 5 minutes end (the sweep has not run)
    clock.advance(minutes=4)
    # Then 1 live hold remains, so 3 more are let in, and a 4th more is refused
    for seat in (5, 6, 7):
        hold(clean_db, uid, concert, seat, clock.now())
    assert hold_refusal(clean_db, uid, concert, 8, clock.now()) == "HOLD_LIMIT_REACHED"


def test_the_limit_is_the_configured_one(clean_db, clock, concert):
    # Given a hold limit of 1
    uid = user_with_points("single", 0, clock.now())
    hold(clean_db, uid, concert, 1, clock.now(), limit=1)
    # When a second seat is asked for
    # Then it is refused
    assert hold_refusal(clean_db, uid, concert, 2, clock.now(), limit=1) == (
        "HOLD_LIMIT_REACHED")


def test_ten_reservations_of_one_user_at_once_leave_four_holds(clean_db, clock, concert):
    # Given one user, and 10 threads each reserving another seat for them at one moment
    uid = user_with_points("racer", 0, clock.now())
    outcomes: list[str] = []
    start = threading.Barrier(10)

    def try_seat(seat: int) -> None:
        with clean_db.connection_context():
            start.wait(timeout=60)
            try:
                hold(clean_db, uid, concert, seat, clock.now())
                outcomes.append("HELD")
            except DomainError as e:
                outcomes.append(e.code)

    threads = [threading.Thread(target=try_seat, args=(seat,)) for seat in range(1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 4 hold a seat and 6 are refused
    assert sorted(outcomes) == ["HELD"] * 4 + ["HOLD_LIMIT_REACHED"] * 6
    assert Reservation.select().where((Reservation.user == uid)
                                      & (Reservation.status == "HELD")).count() == 4


def test_without_the_lock_the_race_would_pass_the_limit(clean_db, clock, concert, monkeypatch):
    # Given the same race with the user-row lock taken away (proves the race test can fail)
    monkeypatch.setattr(concerts, "is_postgres", lambda: False)
    uid = user_with_points("unlocked", 0, clock.now())
    start = threading.Barrier(10)
    held: list[int] = []

    def try_seat(seat: int) -> None:
        with clean_db.connection_context():
            start.wait(timeout=60)
            try:
                with clean_db.atomic():
                    concerts.reserve_seat(uid, concert, DAY, seat, clock.now())
                    threading.Event().wait(0.05)  # hold the transaction open a moment
                held.append(seat)
            except DomainError:
                pass

    threads = [threading.Thread(target=try_seat, args=(seat,)) for seat in range(1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then more than 4 got through: the lock is what holds the limit
    assert len(held) > 4
