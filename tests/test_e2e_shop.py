"""The shop end to end through real web and worker processes: bursts against scarce stock."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis

from db.models import Coupon, Job, Order, PointWallet, Product, User, UserCoupon
from jobs.clock import utcnow
from tests.loadclient import post_many, wait_all
from tests.shop_fixtures import bulk_users
from tests.support import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop_stack(process_env):
    s = Stack(process_env)
    s.start_worker(processes=2, threads=8)
    s.start_web()
    yield s
    s.stop()


def make_coupon(database, stock: int) -> int:
    now = utcnow()
    with database.connection_context():
        return Coupon.create(name="burst", discount_type="FIXED", discount_value=1000,
                             stock=stock, issued=0, starts_at=now - timedelta(hours=1),
                             ends_at=now + timedelta(hours=1), created_at=now).id


def error_codes(database, job_ids: list[str]) -> Counter:
    with database.connection_context():
        jobs = Job.select(Job.status, Job.error).where(Job.id.in_(job_ids))
        return Counter(j.error["code"] if j.error else j.status for j in jobs)


def terminal_jobs(database, ids: list[str], timeout: float) -> list[Job]:
    """The jobs, once every one of them is terminal."""
    deadline = time.monotonic() + timeout
    with database.connection_context():
        while True:
            jobs = list(Job.select().where(Job.id.in_(ids)))
            if all(j.status in ("succeeded", "failed") for j in jobs) and len(jobs) == len(ids):
                return jobs
            assert time.monotonic() < deadline, "jobs still unfinished"
            time.sleep(0.2)


def test_10000_users_race_for_100_coupons(shop_stack, database, settings):
    # Given 10,000 users and a coupon of stock 100
    tokens = bulk_users(database, settings, "burst_", 10_000)
    coupon_id = make_coupon(database, 100)
    # When every user asks for it at once
    requests = [(f"/coupons/{coupon_id}/issue", {}, {"Authorization": f"Bearer {t}"})
                for t in tokens]
    replies = asyncio.run(post_many(shop_stack.api.base, requests, concurrency=256))
    assert Counter(status for status, _ in replies) == {202: 10_000}
    # Then exactly 100 win, 9,900 are told it is sold out, and no one holds two (the
    # outcomes read from the job records: 10,000 status polls would only slow the test)
    jobs = terminal_jobs(database, [b["id"] for _, b in replies], timeout=180)
    outcomes = Counter(j.error["code"] if j.error else j.status for j in jobs)
    assert outcomes == {"succeeded": 100, "COUPON_SOLD_OUT": 9_900}
    with database.connection_context():
        assert Coupon.get_by_id(coupon_id).issued == 100
        holders = [u.user_id for u in UserCoupon.select().where(UserCoupon.coupon == coupon_id)]
        # ... and every loser was turned away at the door: no worker ever ran it
        ids = [b["id"] for _, b in replies]
        never_delivered = Job.select().where(Job.id.in_(ids) & (Job.attempts == 0)
                                             & (Job.status == "failed")).count()
    assert len(holders) == len(set(holders)) == 100
    assert never_delivered == 9_900


def test_one_user_sending_20_at_once_gets_one(shop_stack, database, settings):
    [token] = bulk_users(database, settings, "eager_", 1)
    coupon_id = make_coupon(database, 10)
    request = (f"/coupons/{coupon_id}/issue", {}, {"Authorization": f"Bearer {token}"})
    replies = asyncio.run(post_many(shop_stack.api.base, [request] * 20, concurrency=20))
    jobs = asyncio.run(wait_all(shop_stack.api.base, [(b["id"], token) for _, b in replies]))
    outcomes = Counter(j["error"]["code"] if j["error"] else j["status"] for j in jobs)
    assert outcomes == {"succeeded": 1, "COUPON_ALREADY_ISSUED": 19}
    with database.connection_context():
        assert Coupon.get_by_id(coupon_id).issued == 1


def test_the_gate_lost_mid_burst_still_issues_exactly_stock(shop_stack, database, settings):
    # Given a burst under way against a coupon of stock 30
    tokens = bulk_users(database, settings, "wiped_", 600)
    coupon_id = make_coupon(database, 30)
    client = redis.Redis.from_url(settings.redis_url)
    gate_keys = [f"{settings.redis_prefix}:coupon:{coupon_id}",
                 f"{settings.redis_prefix}:coupon:{coupon_id}:holders"]
    requests = [(f"/coupons/{coupon_id}/issue", {}, {"Authorization": f"Bearer {t}"})
                for t in tokens]

    async def burst_and_wipe():
        first = await post_many(shop_stack.api.base, requests[:300], concurrency=100)
        client.delete(*gate_keys)  # When Redis loses the gate (a restart)
        return first + await post_many(shop_stack.api.base, requests[300:], concurrency=100)

    replies = asyncio.run(burst_and_wipe())
    jobs = asyncio.run(wait_all(shop_stack.api.base,
                                [(b["id"], t) for (_, b), t in zip(replies, tokens, strict=True)]))
    # Then the database still decides: exactly 30 issued, one per user
    outcomes = Counter(j["error"]["code"] if j["error"] else j["status"] for j in jobs)
    assert outcomes == {"succeeded": 30, "COUPON_SOLD_OUT": 570}
    with database.connection_context():
        assert Coupon.get_by_id(coupon_id).issued == 30
        assert UserCoupon.select().where(UserCoupon.coupon == coupon_id).count() == 30
    # ... and the rebuilt gate agrees with the database
    assert int(client.hget(gate_keys[0], "remaining")) == 0


def test_200_orders_for_50_units_then_payment_agree_to_the_unit(shop_stack, database, settings):
    # Given a product with 50 in stock and 200 buyers with points
    tokens = bulk_users(database, settings, "buyer_", 200, balance=100_000)
    with database.connection_context():
        pid = Product.create(name="scarce", price=3_000, stock=50, description="",
                             created_at=utcnow()).id
    # When they all order one unit at once
    requests = [("/orders", {"items": [{"product_id": pid, "quantity": 1}]},
                 {"Authorization": f"Bearer {t}"}) for t in tokens]
    replies = asyncio.run(post_many(shop_stack.api.base, requests, concurrency=200))
    jobs = asyncio.run(wait_all(shop_stack.api.base,
                                [(b["id"], t) for (_, b), t in zip(replies, tokens, strict=True)]))
    outcomes = Counter(j["error"]["code"] if j["error"] else j["status"] for j in jobs)
    # Then exactly 50 orders exist and the stock is 0, never negative
    assert outcomes == {"succeeded": 50, "OUT_OF_STOCK": 150}
    with database.connection_context():
        assert Product.get_by_id(pid).stock == 0
    # When every winner pays (twice, concurrently)
    winners = [(j["result"]["order_id"], t) for j, t in zip(jobs, tokens, strict=True)
               if j["status"] == "succeeded"]
    pays = [(f"/orders/{oid}/payment", {}, {"Authorization": f"Bearer {t}"})
            for oid, t in winners for _ in range(2)]
    pay_replies = asyncio.run(post_many(shop_stack.api.base, pays, concurrency=100))
    owners = [p[2]["Authorization"].removeprefix("Bearer ") for p in pays]
    pay_jobs = asyncio.run(wait_all(shop_stack.api.base, [
        (b["id"], t) for (_, b), t in zip(pay_replies, owners, strict=True)]))
    pay_outcomes = Counter(j["error"]["code"] if j["error"] else j["status"] for j in pay_jobs)
    # Then each order is paid once, and stock and points agree to the unit
    assert pay_outcomes == {"succeeded": 50, "ORDER_ALREADY_PAID": 50}
    with database.connection_context():
        assert Order.select().where(Order.status == "PAID").join(User).where(
            User.username.startswith("buyer_")).count() == 50
        spent = sum(100_000 - w.balance for w in PointWallet.select().join(User).where(
            User.username.startswith("buyer_")))
        assert spent == 50 * 3_000
        assert Product.get_by_id(pid).stock == 0
