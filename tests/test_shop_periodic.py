"""Best-seller windows, outbox delivery and the coupon rules, with a fixed clock."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from db.models import Coupon, Order, OrderItem, OutboxEvent, UserCoupon
from jobs import bestsellers, coupons, orders, outbox
from jobs.errors import DomainError
from tests.conftest import run_task
from tests.shop_fixtures import coupon, product, user_with_points


def paid_order(db, uid, lines, at, status="PAID") -> None:
    with db.atomic():
        order = Order.create(user=uid, status=status, total=0, pay_amount=0, created_at=at,
                             expires_at=at + timedelta(minutes=5),
                             paid_at=at if status == "PAID" else None)
        for pid, quantity in lines:
            OrderItem.create(order=order.id, product=pid, quantity=quantity, unit_price=1)


def test_best_sellers_count_paid_orders_of_the_last_three_days(clean_db, clock):
    uid = user_with_points("fan", 0, clock.now())
    p = [product(f"p{n}", 100, 100, clock.now()) for n in range(7)]
    today = clock.now().replace(hour=12)
    paid_order(clean_db, uid, [(p[0], 9)], today - timedelta(days=3))  # outside the window
    paid_order(clean_db, uid, [(p[1], 2), (p[2], 1)], today - timedelta(days=2))
    paid_order(clean_db, uid, [(p[1], 2), (p[3], 3)], today - timedelta(days=1))
    paid_order(clean_db, uid, [(p[4], 1), (p[5], 1), (p[6], 1)], today)
    paid_order(clean_db, uid, [(p[6], 50)], today, status="EXPIRED")  # never counts
    paid_order(clean_db, uid, [(p[5], 50)], today, status="NOT_PAID")
    ranking = bestsellers.aggregate_sales(today)
    assert ranking == [
        {"product_id": p[1], "sales": 4}, {"product_id": p[3], "sales": 3},
        {"product_id": p[2], "sales": 1}, {"product_id": p[4], "sales": 1},
        {"product_id": p[5], "sales": 1},
    ]
    # A day later the oldest day drops out of the window
    tomorrow = today + timedelta(days=1)
    assert bestsellers.aggregate_sales(tomorrow)[:2] == [
        {"product_id": p[3], "sales": 3}, {"product_id": p[1], "sales": 2}]
    shown = bestsellers.with_products(ranking[:1])
    assert shown == [{"id": p[1], "name": "p1", "price": 100, "stock": 100, "sales": 4}]


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[int] = []
        self.calls = 0

    def deliver(self, event_id, topic, payload) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("data platform unavailable")
        self.delivered.append(event_id)


def deliver(rt) -> dict:
    """One outbox delivery round: how many were delivered and how many failed."""
    result = run_task(rt, "outbox.deliver")
    return {"delivered": result.get("delivered", 0), "failed": result.get("failed", 0)}


def an_event(clock) -> int:
    outbox.add_event("order.paid", {"order_id": 1}, clock.now())
    return OutboxEvent.get().id


def test_a_sink_failing_twice_delivers_once_on_the_retry_schedule(rt, clock):
    rt.sink = FlakySink(failures=2)
    event_id = an_event(clock)
    assert deliver(rt) == {"delivered": 0, "failed": 1}
    clock.advance(seconds=0.9)
    assert deliver(rt) == {"delivered": 0, "failed": 0}  # not due for 1 s
    clock.advance(seconds=0.1)
    assert deliver(rt) == {"delivered": 0, "failed": 1}
    clock.advance(seconds=9.9)
    assert deliver(rt)["delivered"] == 0  # the next one waits 10 s
    clock.advance(seconds=0.1)
    assert deliver(rt) == {"delivered": 1, "failed": 0}
    clock.advance(seconds=120)
    assert deliver(rt) == {"delivered": 0, "failed": 0}
    assert rt.sink.delivered == [event_id]
    event = OutboxEvent.get_by_id(event_id)
    assert (event.status, event.attempts) == ("DELIVERED", 3)


def test_a_sink_that_always_fails_ends_dead_and_replays(rt, clock):
    rt.sink = FlakySink(failures=10**6)
    event_id = an_event(clock)
    for wait in (0, 1, 10, 60):
        clock.advance(seconds=wait)
        deliver(rt)
    event = OutboxEvent.get_by_id(event_id)
    assert (event.status, event.attempts) == ("DEAD", 4)
    assert "unavailable" in event.last_error
    clock.advance(hours=1)
    assert deliver(rt)["failed"] == 0  # the dead stay dead
    assert outbox.replay_dead(clock.now()) == 1
    rt.sink = FlakySink(failures=0)
    assert deliver(rt) == {"delivered": 1, "failed": 0}
    assert OutboxEvent.get_by_id(event_id).status == "DELIVERED"


def test_a_claimed_event_comes_back_after_its_lease(rt, clock):
    event_id = an_event(clock)
    assert [e.id for e in outbox.claim_due(clock.now())] == [event_id]  # a deliverer died
    assert outbox.claim_due(clock.now()) == []
    clock.advance(seconds=31)
    assert deliver(rt) == {"delivered": 1, "failed": 0}


def test_coupon_window_stock_and_one_per_user(clean_db, clock):
    uid = user_with_points("collector", 0, clock.now())
    second = user_with_points("second", 0, clock.now())
    later = coupon(clock.now(), starts=timedelta(hours=1), ends=timedelta(hours=2), stock=1)

    def issue(user, coupon_id):
        with clean_db.atomic():
            return coupons.issue_coupon(user, coupon_id, clock.now())

    with pytest.raises(DomainError, match="COUPON_NOT_ACTIVE"):
        issue(uid, later)
    clock.advance(hours=1)
    assert issue(uid, later)["coupon_id"] == later
    with pytest.raises(DomainError, match="COUPON_ALREADY_ISSUED"):
        issue(uid, later)
    with pytest.raises(DomainError, match="COUPON_SOLD_OUT"):
        issue(second, later)
    clock.advance(hours=1)
    with pytest.raises(DomainError, match="COUPON_NOT_ACTIVE"):
        issue(second, later)
    assert Coupon.get_by_id(later).issued == UserCoupon.select().count() == 1


def test_the_gate_refuses_without_the_database_and_rebuilds_from_it(rt, clock, clean_db):
    gate = rt.coupon_gate
    c = coupon(clock.now(), stock=2, starts=timedelta(minutes=-1), ends=timedelta(minutes=1))
    gate.forget(c)
    users_ = [user_with_points(f"g{n}", 0, clock.now()) for n in range(4)]
    assert gate.admit(c, users_[0], clock.now(), coupons.gate_state) == "ok"
    assert gate.admit(c, users_[0], clock.now(), coupons.gate_state) == "known"
    assert gate.admit(c, users_[1], clock.now(), coupons.gate_state) == "ok"
    with pytest.raises(DomainError, match="COUPON_SOLD_OUT"):
        gate.admit(c, users_[2], clock.now(), coupons.gate_state)
    gate.give_back(c, users_[1])  # user 1's issue failed for good
    assert gate.admit(c, users_[2], clock.now(), coupons.gate_state) == "ok"
    # After Redis loses the gate, it is rebuilt from what the database issued
    with clean_db.atomic():
        coupons.issue_coupon(users_[0], c, clock.now())
    gate.forget(c)
    assert gate.admit(c, users_[0], clock.now(), coupons.gate_state) == "known"
    assert gate.admit(c, users_[3], clock.now(), coupons.gate_state) == "ok"
    with pytest.raises(DomainError, match="COUPON_SOLD_OUT"):
        gate.admit(c, users_[1], clock.now(), coupons.gate_state)
    clock.advance(minutes=1)
    with pytest.raises(DomainError, match="COUPON_NOT_ACTIVE"):
        gate.admit(c, users_[3], clock.now(), coupons.gate_state)
    gate.forget(c)


def test_concurrent_issues_never_exceed_stock(clean_db, clock):
    c = coupon(clock.now(), stock=5)
    uids = [user_with_points(f"rush{n}", 0, clock.now()) for n in range(30)]
    outcomes: list[str] = []

    def issue(uid):
        with clean_db.connection_context():
            try:
                with clean_db.atomic():
                    coupons.issue_coupon(uid, c, clock.now())
                outcomes.append("ok")
            except DomainError as e:
                outcomes.append(e.code)

    threads = [threading.Thread(target=issue, args=(u,)) for u in uids + uids[:10]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5
    assert Coupon.get_by_id(c).issued == UserCoupon.select().count() == 5


def test_orders_expire_through_the_periodic_task(rt, clock, clean_db):
    uid = user_with_points("p_user", 0, clock.now())
    with clean_db.atomic():
        orders.create_order(uid, [(product("x", 1, 1, clock.now()), 1)], None, clock.now())
    clock.advance(minutes=6)
    assert run_task(rt, "orders.expire") == {"expired": 1}
