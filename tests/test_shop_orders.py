"""Orders on the real database with a fixed clock: stock, coupons, payment, expiry, races."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.models import Order, OrderItem, OutboxEvent, UserCoupon
from jobs import orders, points
from jobs.errors import DomainError
from jobs.platform import Context
from tests.shop_fixtures import coupon, give_coupon, product, stock_of, user_with_points
from tests.support import run_together


def create(db, uid, lines, clock, coupon_id=None) -> dict:
    with db.atomic():
        return orders.create_order(uid, lines, coupon_id, clock.now())


def pay(db, uid, order_id, now) -> dict:
    with db.atomic():
        return orders.pay_order(uid, order_id, now, Context(now).emit)


def refusal(fn, *args) -> str:
    with pytest.raises(DomainError) as e:
        fn(*args)
    return e.value.code


def test_an_order_takes_stock_at_once(clean_db, clock):
    uid = user_with_points("buyer", 0, clock.now())
    a, b = product("a", 1_000, 5, clock.now()), product("b", 250, 5, clock.now())
    result = create(clean_db, uid, [(a, 2), (b, 4)], clock)
    assert result["status"] == "NOT_PAID"
    assert (result["total"], result["discount"], result["pay_amount"]) == (3_000, 0, 3_000)
    assert result["expires_at"].startswith((clock.now() + timedelta(minutes=5)).isoformat()[:19])
    assert (stock_of(a), stock_of(b)) == (3, 1)


def test_out_of_stock_takes_nothing(clean_db, clock):
    uid = user_with_points("greedy", 0, clock.now())
    a, b = product("a", 1_000, 5, clock.now()), product("b", 250, 1, clock.now())
    assert refusal(create, clean_db, uid, [(a, 2), (b, 2)], clock) == "OUT_OF_STOCK"
    assert (stock_of(a), stock_of(b)) == (5, 1)
    assert Order.select().count() == 0


def test_the_first_line_that_cannot_be_taken_names_the_refusal(clean_db, clock):
    # (lines before it were taken, then given back: their stock is no excuse)
    uid = user_with_points("picky", 0, clock.now())
    a, b = product("a", 100, 6, clock.now()), product("b", 100, 1, clock.now())
    with pytest.raises(DomainError) as short:
        create(clean_db, uid, [(b, 3), (a, 5)], clock)
    assert (short.value.code, short.value.message) == ("OUT_OF_STOCK",
                                                       f"not enough of product {b}")
    with pytest.raises(DomainError) as lost:
        create(clean_db, uid, [(a, 5), (999_999, 1), (b, 1)], clock)
    assert (lost.value.code, lost.value.message) == ("PRODUCT_NOT_FOUND", "no product 999999")
    assert (stock_of(a), stock_of(b), Order.select().count()) == (6, 1, 0)


def test_orders_over_overlapping_products_at_once_neither_deadlock_nor_oversell(clean_db,
                                                                                clock):
    # Given three products of 12 each, and 24 orders of two or three lines at once
    ids = [product(f"p{n}", 10, 12, clock.now()) for n in range(3)]
    shapes = [[(ids[0], 1), (ids[1], 1)], [(ids[2], 1), (ids[1], 1), (ids[0], 1)],
              [(ids[2], 1), (ids[0], 1)], [(ids[1], 1), (ids[2], 1)]]
    uid = user_with_points("crowd", 0, clock.now())
    outcomes: list[str] = []

    def one(lines):
        with clean_db.connection_context():
            try:
                create(clean_db, uid, lines, clock)
                outcomes.append("ok")
            except DomainError as e:
                outcomes.append(e.code)

    def order(n: int):
        return lambda: one(shapes[n % len(shapes)])

    run_together(*[order(n) for n in range(24)])
    # Then every order succeeded or was refused for stock (no deadlock), and the stock
    # taken equals the items recorded
    assert set(outcomes) == {"ok", "OUT_OF_STOCK"} and len(outcomes) == 24
    for pid in ids:
        ordered = sum(i.quantity for i in OrderItem.select().where(OrderItem.product == pid))
        assert stock_of(pid) + ordered == 12 and stock_of(pid) >= 0


def test_unknown_product_and_empty_cart_are_refused(clean_db, clock):
    uid = user_with_points("lost", 0, clock.now())
    assert refusal(create, clean_db, uid, [(999_999, 1)], clock) == "PRODUCT_NOT_FOUND"
    assert refusal(create, clean_db, uid, None, clock) == "CART_EMPTY"


@pytest.mark.parametrize(("kind", "value", "discount"), [
    ("FIXED", 700, 700), ("FIXED", 50_000, 3_000), ("PERCENT", 10, 300), ("PERCENT", 100, 3_000),
])
def test_coupon_discounts_never_go_below_zero(clean_db, clock, kind, value, discount):
    uid = user_with_points("saver", 0, clock.now())
    a = product("a", 1_000, 5, clock.now())
    held = give_coupon(uid, coupon(clock.now(), kind, value), clock.now() + timedelta(days=1),
                       clock.now())
    result = create(clean_db, uid, [(a, 3)], clock, held)
    assert (result["discount"], result["pay_amount"]) == (discount, 3_000 - discount)


def test_coupon_refusals(clean_db, clock):
    uid = user_with_points("owner", 0, clock.now())
    other = user_with_points("other", 0, clock.now())
    a = product("a", 1_000, 50, clock.now())
    c = coupon(clock.now())
    mine = give_coupon(uid, c, clock.now() + timedelta(hours=1), clock.now())
    theirs = give_coupon(other, c, clock.now() + timedelta(hours=1), clock.now())
    assert refusal(create, clean_db, uid, [(a, 1)], clock, theirs) == "COUPON_NOT_FOUND"
    create(clean_db, uid, [(a, 1)], clock, mine)
    # held by a live order: not usable twice
    assert refusal(create, clean_db, uid, [(a, 1)], clock, mine) == "COUPON_ALREADY_USED"
    late = give_coupon(uid, coupon(clock.now()), clock.now() + timedelta(minutes=1), clock.now())
    clock.advance(minutes=1)
    assert refusal(create, clean_db, uid, [(a, 1)], clock, late) == "COUPON_EXPIRED"
    assert stock_of(a) == 49  # refused orders took nothing


def test_payment_spends_points_uses_the_coupon_and_writes_the_outbox(clean_db, clock):
    uid = user_with_points("payer", 10_000, clock.now())
    a = product("a", 1_000, 5, clock.now())
    held = give_coupon(uid, coupon(clock.now(), "FIXED", 500), clock.now() + timedelta(days=1),
                       clock.now())
    order_id = create(clean_db, uid, [(a, 2)], clock, held)["order_id"]
    assert pay(clean_db, uid, order_id, clock.now()) == {
        "order_id": order_id, "status": "PAID", "balance": 8_500}
    assert Order.get_by_id(order_id).status == "PAID"
    assert UserCoupon.get_by_id(held).used
    event = OutboxEvent.get()
    assert (event.topic, event.payload["order_id"], event.payload["pay_amount"]) == (
        "order.paid", order_id, 1_500)
    assert refusal(pay, clean_db, uid, order_id, clock.now()) == "ORDER_ALREADY_PAID"


def test_short_of_points_changes_nothing(clean_db, clock):
    uid = user_with_points("poor", 100, clock.now())
    a = product("a", 1_000, 5, clock.now())
    order_id = create(clean_db, uid, [(a, 1)], clock)["order_id"]
    assert refusal(pay, clean_db, uid, order_id, clock.now()) == "INSUFFICIENT_POINTS"
    assert Order.get_by_id(order_id).status == "NOT_PAID"
    assert points.balance(uid) == {"balance": 100, "held": 0}
    assert OutboxEvent.select().count() == 0


def test_someone_elses_or_unknown_order_is_not_found(clean_db, clock):
    uid = user_with_points("a_user", 10_000, clock.now())
    other = user_with_points("b_user", 10_000, clock.now())
    order_id = create(clean_db, uid, [(product("a", 10, 5, clock.now()), 1)], clock)["order_id"]
    assert refusal(pay, clean_db, other, order_id, clock.now()) == "ORDER_NOT_FOUND"
    assert refusal(pay, clean_db, uid, order_id + 1000, clock.now()) == "ORDER_NOT_FOUND"


def test_expiry_returns_stock_and_frees_the_coupon_once(clean_db, clock):
    # Given an unpaid order holding stock and a coupon
    uid = user_with_points("slow", 10_000, clock.now())
    a = product("a", 1_000, 5, clock.now())
    held = give_coupon(uid, coupon(clock.now()), clock.now() + timedelta(days=1), clock.now())
    order_id = create(clean_db, uid, [(a, 3)], clock, held)["order_id"]
    # When the sweep runs just before and then at the deadline
    clock.advance(minutes=4, seconds=59)
    assert orders.expire_unpaid_orders(clock.now()) == 0
    clock.advance(seconds=1)
    assert orders.expire_unpaid_orders(clock.now()) == 1
    assert orders.expire_unpaid_orders(clock.now()) == 0
    # Then the order is EXPIRED, the stock is back once, and the coupon works again
    assert Order.get_by_id(order_id).status == "EXPIRED"
    assert stock_of(a) == 5
    assert UserCoupon.get_by_id(held).order_id is None
    assert create(clean_db, uid, [(a, 1)], clock, held)["discount"] == 1_000
    # ... and paying the expired order fails and spends nothing
    assert refusal(pay, clean_db, uid, order_id, clock.now()) == "ORDER_EXPIRED"
    assert points.balance(uid) == {"balance": 10_000, "held": 0}


def test_paying_after_the_deadline_fails_even_before_the_sweep(clean_db, clock):
    uid = user_with_points("late", 10_000, clock.now())
    order_id = create(clean_db, uid, [(product("a", 10, 5, clock.now()), 1)], clock)["order_id"]
    clock.advance(minutes=5)
    assert refusal(pay, clean_db, uid, order_id, clock.now()) == "ORDER_EXPIRED"
    assert points.balance(uid) == {"balance": 10_000, "held": 0}


def test_payment_racing_expiry_has_exactly_one_winner(clean_db, clock):
    # Given 40 orders, each raced by a payment (just in time) and the sweep (just after)
    uid = user_with_points("racer", 1_000_000, clock.now())
    a = product("a", 100, 1_000, clock.now())
    outcomes = []
    for _ in range(40):
        order_id = create(clean_db, uid, [(a, 2)], clock)["order_id"]
        deadline = Order.get_by_id(order_id).expires_at
        results: dict[str, object] = {}

        def paying(order_id=order_id, deadline=deadline, results=results):
            with clean_db.connection_context():
                try:
                    results["pay"] = pay(clean_db, uid, order_id,
                                         deadline - timedelta(milliseconds=1))["status"]
                except DomainError as e:
                    results["pay"] = e.code

        def sweeping(deadline=deadline, results=results):
            with clean_db.connection_context():
                results["sweep"] = orders.expire_unpaid_orders(deadline)

        run_together(paying, sweeping)
        orders.expire_unpaid_orders(deadline)  # a sweep that skipped a locked row retries
        status = Order.get_by_id(order_id).status
        # Then exactly one of them won, and the loser saw it
        assert (status, results["pay"]) in {("PAID", "PAID"), ("EXPIRED", "ORDER_EXPIRED")}
        outcomes.append(status)
    paid = outcomes.count("PAID")
    # ... and stock and points agree with the winners, to the unit
    assert stock_of(a) == 1_000 - 2 * paid
    assert points.balance(uid)["balance"] == 1_000_000 - 200 * paid
