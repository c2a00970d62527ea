"""Reservations on the real database with a fixed clock: holds, expiry, payment, races."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import peewee
import pytest

from db.models import ConcertPayment, Reservation
from jobs import concerts, points, records
from jobs.errors import DomainError
from tests.shop_fixtures import user_with_points
from tests.support import run_together
from workers import lifecycle

DAY = date(2027, 3, 1)


@pytest.fixture
def concert(clean_db, clock) -> int:
    return concerts.create_concert("Test night", [(DAY, 10_000), (DAY + timedelta(1), 5)],
                                   clock.now())["id"]


def reserve(db, uid, cid, seat, now, day=DAY) -> dict:
    with db.atomic():
        return concerts.reserve_seat(uid, cid, day, seat, now)


def pay(db, uid, rid, now) -> dict:
    with db.atomic():
        return concerts.pay_reservation(uid, rid, now)


def code_of(fn, *args) -> str:
    with pytest.raises(DomainError) as e:
        fn(*args)
    return e.value.code


def seat_status(cid, seat, now, day=DAY) -> str:
    return concerts.seats(cid, day, now)["items"][seat - 1]["status"]


def test_a_hold_lasts_five_minutes_then_the_sweep_frees_the_seat_once(clean_db, clock, concert):
    a, b = user_with_points("fan_a", 0, clock.now()), user_with_points("fan_b", 0, clock.now())
    held = reserve(clean_db, a, concert, 7, clock.now())
    assert held["status"] == "HELD"
    assert seat_status(concert, 7, clock.now()) == "HELD"
    assert code_of(reserve, clean_db, b, concert, 7, clock.now()) == "SEAT_NOT_AVAILABLE"
    clock.advance(minutes=4, seconds=59)
    assert concerts.expire_holds(clock.now()) == 0
    clock.advance(seconds=1)
    assert concerts.expire_holds(clock.now()) == 1
    assert concerts.expire_holds(clock.now()) == 0
    assert seat_status(concert, 7, clock.now()) == "AVAILABLE"
    assert reserve(clean_db, b, concert, 7, clock.now())["status"] == "HELD"


def test_a_lapsed_hold_frees_its_seat_even_before_the_sweep(clean_db, clock, concert):
    a, b = user_with_points("late_a", 0, clock.now()), user_with_points("late_b", 0, clock.now())
    reserve(clean_db, a, concert, 3, clock.now())
    clock.advance(minutes=5)
    assert seat_status(concert, 3, clock.now()) == "AVAILABLE"
    assert reserve(clean_db, b, concert, 3, clock.now())["status"] == "HELD"


def test_paying_after_the_hold_expired_fails_and_spends_nothing(clean_db, clock, concert):
    uid = user_with_points("slowpay", 50_000, clock.now())
    rid = reserve(clean_db, uid, concert, 9, clock.now())["reservation_id"]
    clock.advance(minutes=5)
    assert code_of(pay, clean_db, uid, rid, clock.now()) == "RESERVATION_EXPIRED"
    concerts.expire_holds(clock.now())
    assert code_of(pay, clean_db, uid, rid, clock.now()) == "RESERVATION_EXPIRED"
    assert points.balance(uid) == {"balance": 50_000, "held": 0}
    assert ConcertPayment.select().count() == 0


def test_payment_confirms_spends_and_records(clean_db, clock, concert):
    uid = user_with_points("payer", 50_000, clock.now())
    other = user_with_points("other", 50_000, clock.now())
    rid = reserve(clean_db, uid, concert, 1, clock.now())["reservation_id"]
    assert code_of(pay, clean_db, other, rid, clock.now()) == "RESERVATION_NOT_FOUND"
    assert pay(clean_db, uid, rid, clock.now()) == {
        "reservation_id": rid, "status": "CONFIRMED", "balance": 40_000}
    assert code_of(pay, clean_db, uid, rid, clock.now()) == "RESERVATION_ALREADY_PAID"
    assert seat_status(concert, 1, clock.now() + timedelta(days=1)) == "SOLD"
    assert ConcertPayment.get().amount == 10_000
    poor = user_with_points("poor", 10, clock.now())
    rid2 = reserve(clean_db, poor, concert, 2, clock.now())["reservation_id"]
    assert code_of(pay, clean_db, poor, rid2, clock.now()) == "INSUFFICIENT_POINTS"
    assert seat_status(concert, 2, clock.now()) == "HELD"


def test_unknown_dates_and_full_dates(clean_db, clock, concert):
    uid = user_with_points("filler", 0, clock.now())
    assert code_of(reserve, clean_db, uid, concert, 1, clock.now(), DAY + timedelta(9)) == (
        "SCHEDULE_NOT_FOUND")
    other_day = DAY + timedelta(1)
    # a user holds at most 4 seats of a concert: 13 fillers share the 50
    fillers = [uid] + [user_with_points(f"filler{n}", 0, clock.now()) for n in range(12)]
    for seat in range(1, 51):
        reserve(clean_db, fillers[(seat - 1) // 4], concert, seat, clock.now(), other_day)
    listed = concerts.available_dates(concert, clock.now())["items"]
    assert [(d["date"], d["available_seats"]) for d in listed] == [(DAY.isoformat(), 50)]
    assert code_of(concerts.available_dates, concert + 999, clock.now()) == "CONCERT_NOT_FOUND"


def test_100_users_racing_for_one_seat_leave_one_holder(clean_db, clock, concert):
    uids = [user_with_points(f"racer{n}", 0, clock.now()) for n in range(100)]
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def try_seat(chunk: list[int]) -> None:
        with clean_db.connection_context():
            start.wait(timeout=60)
            for uid in chunk:
                try:
                    reserve(clean_db, uid, concert, 25, clock.now())
                    outcomes.append("HELD")
                except DomainError as e:
                    outcomes.append(e.code)

    threads = [threading.Thread(target=try_seat, args=(uids[n::20],)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["HELD"] + ["SEAT_NOT_AVAILABLE"] * 99
    assert Reservation.select().where(Reservation.seat_no == 25).count() == 1


def test_the_database_itself_refuses_a_second_live_holder(clean_db, clock, concert):
    uid = user_with_points("direct", 0, clock.now())
    held = reserve(clean_db, uid, concert, 11, clock.now())
    row = Reservation.get_by_id(held["reservation_id"])
    with pytest.raises(peewee.IntegrityError), clean_db.atomic():
        Reservation.create(user=uid, concert_date=row.concert_date_id, seat_no=11, status="HELD",
                           price=1, created_at=clock.now(), expires_at=clock.now())


def test_payment_racing_hold_expiry_has_one_winner(clean_db, clock, concert):
    uid = user_with_points("edge", 10**7, clock.now())
    paid = 0
    for seat in range(1, 31):
        rid = reserve(clean_db, uid, concert, seat, clock.now())["reservation_id"]
        deadline = Reservation.get_by_id(rid).expires_at
        results = {}

        def paying(rid=rid, deadline=deadline, results=results):
            with clean_db.connection_context():
                try:
                    results["pay"] = pay(clean_db, uid, rid,
                                         deadline - timedelta(milliseconds=1))["status"]
                except DomainError as e:
                    results["pay"] = e.code

        def sweeping(deadline=deadline, results=results):
            with clean_db.connection_context():
                results["sweep"] = concerts.expire_holds(deadline)

        run_together(paying, sweeping)
        status = Reservation.get_by_id(rid).status
        assert (status, results["pay"]) in {("CONFIRMED", "CONFIRMED"),
                                             ("EXPIRED", "RESERVATION_EXPIRED")}
        paid += status == "CONFIRMED"
    assert points.balance(uid)["balance"] == 10**7 - 10_000 * paid
    assert ConcertPayment.select().count() == paid


def test_a_paid_seat_ends_the_queue_token_only_after_the_payment_commits(rt, concert, clock):
    # Given two users in the concert's line, each holding a seat; one cannot pay
    room = rt.waiting_room
    rich = user_with_points("rich_fan", 20_000, clock.now())
    poor = user_with_points("poor_fan", 10, clock.now())
    for uid in (rich, poor):
        room.join(concert, uid, f"token-{uid}", clock.now())
    jobs_of = {}
    for seat, uid in ((1, rich), (2, poor)):
        rid = reserve(rt.database, uid, concert, seat, clock.now())["reservation_id"]
        job, _ = records.record_job(uid, "concert.pay",
                                    {"reservation_id": rid, "concert_id": concert}, None,
                                    clock.now())
        jobs_of[uid] = job

    def still_in_line(uid):
        return room.parse_status(room.status(concert, uid, f"token-{uid}", clock.now())).status

    # When both payments run through the lifecycle
    assert lifecycle.execute_job(str(jobs_of[poor].id)) == "failed"
    assert lifecycle.execute_job(str(jobs_of[rich].id)) == "succeeded"
    # Then only the committed payment ended its token; the refused one left it alone
    assert still_in_line(poor) == "ACTIVE"
    assert still_in_line(rich) == "EXPIRED"


def test_a_payment_whose_transaction_rolls_back_leaves_the_token_alone(rt, concert, clock,
                                                                        monkeypatch):
    # Given a user who can pay, in line with a held seat
    room = rt.waiting_room
    uid = user_with_points("rolled_back", 20_000, clock.now())
    room.join(concert, uid, "token-rb", clock.now())
    rid = reserve(rt.database, uid, concert, 3, clock.now())["reservation_id"]
    job, _ = records.record_job(uid, "concert.pay", {"reservation_id": rid,
                                                     "concert_id": concert}, None, clock.now())
    # When the payment's transaction rolls back at its end (another delivery finished it)
    monkeypatch.setattr(records, "finish_job", lambda *a, **k: None)
    assert lifecycle.execute_job(str(job.id)) == "skipped"
    # Then nothing of it happened: the seat is still held and the token still active
    assert seat_status(concert, 3, clock.now()) == "HELD"
    place = room.parse_status(room.status(concert, uid, "token-rb", clock.now()))
    assert place.status == "ACTIVE"
