"""The invariant checker (``bazaar check``): all hold after real commands, and each one
fails when a row it guards is corrupted."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

from jobs import auction, catalog, check, concerts, coupons, demo, feed, users
from tests.commands import ok, refused, run
from tests.conftest import run_task
from tests.support import ROOT

DAY, OTHER_DAY = date(2027, 3, 1), date(2027, 3, 2)
LIVE_SEAT_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS reservations_live_seat ON reservations"
                   " (concert_date_id, seat_no) WHERE status IN ('HELD', 'CONFIRMED')")


def build_world(rt, clock) -> dict:
    """Every kind of row, each made by its command (or sweep) through the job lifecycle."""
    now = clock.now()
    ann, bob, cat = (users.create_user(name, "x", now).id for name in ("ann", "bob", "cat"))
    artist = users.create_user("artist", "x", now, is_artist=True).id
    for uid in (ann, bob, cat):
        ok(run(uid, "points.charge", amount=500_000))
    mug = catalog.create_product("mug", 1_000, 50, "", now)["id"]
    pen = catalog.create_product("pen", 300, 50, "", now)["id"]
    coupon = coupons.create_coupon("5 off", "FIXED", 500, 3, now - timedelta(hours=1),
                                   now + timedelta(days=1), now)["id"]
    rt.redis.delete(*rt.coupon_gate.keys(coupon))  # the id is reused by every test
    ann_coupon = ok(run(ann, "coupons.issue", coupon_id=coupon))["user_coupon_id"]
    bob_coupon = ok(run(bob, "coupons.issue", coupon_id=coupon))["user_coupon_id"]
    assert refused(run(ann, "coupons.issue", coupon_id=coupon)) == "COUPON_ALREADY_ISSUED"
    # an order that will expire, holding bob's coupon
    lines = [{"product_id": mug, "quantity": 2}]
    ok(run(bob, "orders.create", items=lines, user_coupon_id=bob_coupon))
    # concerts: ann holds 4 seats of one (pays for one) and 2 of another
    one = concerts.create_concert("one", [(DAY, 2_000)], now)["id"]
    two = concerts.create_concert("two", [(OTHER_DAY, 0)], now)["id"]
    held = [ok(run(ann, "concert.reserve", concert_id=one, date=DAY.isoformat(), seat_no=n))
            for n in (1, 2, 3, 4)]
    for n in (1, 2):
        ok(run(ann, "concert.reserve", concert_id=two, date=OTHER_DAY.isoformat(), seat_no=n))
    assert refused(run(bob, "concert.reserve", concert_id=one, date=DAY.isoformat(),
                       seat_no=1)) == "SEAT_NOT_AVAILABLE"
    ok(run(ann, "concert.pay", reservation_id=held[0]["reservation_id"], concert_id=one))
    # an auction that closes sold (bob outbids ann), and one still open
    closing = auction.create_artwork(artist, "Dusk", "PAINTING", None, 1_000, None,
                                     now + timedelta(minutes=1), now)["id"]
    still_open = auction.create_artwork(artist, "Dawn", "DRAWING", None, 1_000, None,
                                        now + timedelta(days=1), now)["id"]
    rt.redis.delete(*rt.coupon_gate.keys(coupon))  # the id is reused by every test
    ok(run(ann, "auction.bid", artwork_id=closing, amount=1_000, max_amount=3_000))
    ok(run(bob, "auction.bid", artwork_id=closing, amount=2_000, max_amount=5_000))
    ok(run(cat, "auction.bid", artwork_id=still_open, amount=1_000, max_amount=4_000))
    # the feed: likes, an unlike, comments
    post = feed.create_post(cat, "Hello", "First post", now)["id"]
    ok(run(ann, "sns.like", post_id=post))
    ok(run(bob, "sns.like", post_id=post))
    ok(run(bob, "sns.unlike", post_id=post))
    ok(run(ann, "sns.comment", post_id=post, comment="Nice"))
    # six minutes on: bob's order expires (the coupon comes back), the auction closes
    clock.advance(minutes=6)
    assert run_task(rt, "orders.expire")["expired"] == 1
    assert run_task(rt, "auction.close")["sold"] == 1
    paid = ok(run(ann, "orders.create", items=[*lines, {"product_id": pen, "quantity": 1}],
                  user_coupon_id=ann_coupon))["order_id"]
    ok(run(ann, "orders.pay", order_id=paid))
    ok(run(cat, "orders.create", items=[{"product_id": pen, "quantity": 3}]))  # left unpaid
    return {"users": (ann, bob, cat), "artist": artist, "stock": {mug: 50, pen: 50},
            "paid_order": paid}


def outcomes(db, initial_stock=None, hold_limit=4, settle=0.0) -> dict[str, check.Outcome]:
    return {o.name: o for o in check.check(db, hold_limit, settle, initial_stock)}


def failing(found: dict[str, check.Outcome]) -> set[str]:
    return {name for name, o in found.items() if o.ok is False}


def test_every_invariant_holds_after_real_commands(rt, clock, clean_db):
    # Given every kind of command applied, refused, expired and closed
    world = build_world(rt, clock)
    # When the database is checked
    found = outcomes(clean_db, world["stock"], settle=0.1)
    # Then every invariant holds, having examined rows
    assert failing(found) == set(), [o.line() for o in found.values()]
    assert found["charges applied once"].examined == 3
    assert found["orders made once"].examined == 3
    assert found["seats held once"].examined == 6
    assert all(o.examined > 0 for o in found.values()), [o.line() for o in found.values()]


def test_demo_data_written_without_jobs_keeps_every_invariant(clean_db, clock):
    # Given the demo data: charges, bids, likes and comments made straight by the rules
    demo.load_demo_data(lambda password: "x", clock.now())
    # Then every invariant holds all the same
    assert failing(outcomes(clean_db, settle=0.1)) == set()


def test_stock_is_skipped_without_the_initial_stock(rt, clock, clean_db):
    build_world(rt, clock)
    found = outcomes(clean_db)
    assert found["stock conserved"].ok is None
    lines, holds = check.report(list(found.values()))
    assert holds and "stock conserved" in lines and "SKIP" in lines


CORRUPTIONS = {
    "a job left queued": (
        "UPDATE jobs SET status = 'queued' WHERE type = 'sns.comment'",
        {"jobs terminal"}),
    "a charge job failed that was applied": (
        "UPDATE jobs SET status = 'failed' WHERE type = 'points.charge' AND status = 'succeeded'"
        " AND id = (SELECT min(id::text)::uuid FROM jobs WHERE type = 'points.charge')",
        {"charges applied once"}),
    "a balance changed alone": (
        "UPDATE point_wallets SET balance = balance + 1"
        " WHERE user_id = (SELECT min(user_id) FROM point_wallets)",
        {"wallets equal history", "points conserved"}),
    "a history row's balance_after": (
        "UPDATE point_history SET balance_after = balance_after + 1"
        " WHERE id = (SELECT min(id) FROM point_history)",
        {"wallets equal history"}),
    "points from nowhere, logged": (
        "INSERT INTO point_history (user_id, type, amount, balance_after, ref, created_at)"
        " SELECT user_id, 'USE', 100, balance + 100, 'gift', now() FROM point_wallets"
        " WHERE user_id = (SELECT min(user_id) FROM point_wallets);"
        " UPDATE point_wallets SET balance = balance + 100"
        " WHERE user_id = (SELECT min(user_id) FROM point_wallets)",
        {"points conserved"}),
    "an order without its job": (
        "INSERT INTO orders (user_id, status, total, discount, pay_amount, created_at,"
        " expires_at) SELECT user_id, status, total, discount, pay_amount, created_at,"
        " expires_at FROM orders WHERE status = 'NOT_PAID'",
        {"orders made once"}),
    "a payment moved to another order": (
        "UPDATE point_history SET ref = 'order:999999' WHERE starts_with(ref, 'order:')",
        {"order payments once"}),
    "an issued coupon's job failed": (
        "UPDATE jobs SET status = 'failed' WHERE type = 'coupons.issue'"
        " AND status = 'succeeded' AND user_id = (SELECT min(id) FROM users)",
        {"coupons issued once"}),
    "a coupon's count": (
        "UPDATE coupons SET issued = issued + 1",
        {"coupon counts"}),
    "a used coupon let go of its order": (
        "UPDATE user_coupons SET order_id = NULL WHERE used",
        {"coupons follow their orders"}),
    "a hold's job failed": (
        "UPDATE jobs SET status = 'failed' WHERE type = 'concert.reserve'"
        " AND id = (SELECT min(id::text)::uuid FROM jobs WHERE type = 'concert.reserve'"
        " AND status = 'succeeded')",
        {"seats held once"}),
    "two live holders of a seat": (
        "DROP INDEX reservations_live_seat;"
        " INSERT INTO reservations (user_id, concert_date_id, seat_no, status, price,"
        " created_at, expires_at) SELECT user_id, concert_date_id, seat_no, status, price,"
        " created_at, expires_at FROM reservations WHERE status = 'HELD' LIMIT 1",
        {"one live holder per seat", "seats held once"}),
    "five holds on one concert": (
        "UPDATE concert_dates SET concert_id = (SELECT min(id) FROM concerts)",
        {"holds within the limit"}),
    "a seat's payment record lost": (
        "DELETE FROM concert_payments",
        {"seat payments once"}),
    "a leader's maximum changed": (
        "UPDATE artworks SET leader_max = leader_max + 100 WHERE leader_id IS NOT NULL",
        {"escrow equals leading bids"}),
    "an auction's closing event lost": (
        "DELETE FROM artwork_events WHERE type = 'closed'",
        {"auctions settled once"}),
    "a like count": (
        "UPDATE posts SET like_count = like_count + 1",
        {"feed counts equal rows"}),
    "stock taken without an order": (
        "UPDATE products SET stock = stock - 1 WHERE id = (SELECT min(id) FROM products)",
        {"stock conserved"}),
}


@pytest.fixture
def live_seat_index(clean_db):
    """Put back the partial UNIQUE index a corruption drops."""
    yield
    clean_db.execute_sql("TRUNCATE reservations CASCADE")
    clean_db.execute_sql(LIVE_SEAT_INDEX)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_invariant_fails_on_its_corruption(rt, clock, clean_db, live_seat_index,
                                                corruption):
    # Given a world where every invariant holds
    world = build_world(rt, clock)
    sql, broken = CORRUPTIONS[corruption]
    # When one row it guards is corrupted
    for statement in sql.split(";"):
        clean_db.execute_sql(statement)
    # Then exactly that invariant fails (and what follows from it), naming the row
    found = outcomes(clean_db, world["stock"], settle=0.2)
    assert failing(found) == broken, [o.line() for o in found.values()]
    assert all(found[name].offenders for name in broken)
    assert not check.report(list(found.values()))[1]


def test_a_job_younger_than_the_grace_may_still_be_running(rt, clock, clean_db):
    world = build_world(rt, clock)
    clean_db.execute_sql("UPDATE jobs SET status = 'running' WHERE type = 'sns.comment'")
    assert "jobs terminal" not in failing(outcomes(clean_db, world["stock"]))
    assert "jobs terminal" in failing(outcomes(clean_db, world["stock"], settle=0.1))


def test_the_checks_read_one_snapshot(rt, clock, clean_db, monkeypatch):
    seen = []
    real = check._run

    def spy(db, rule, params):
        seen.append(db.execute_sql("SHOW transaction_isolation").fetchone()[0])
        return real(db, rule, params)

    monkeypatch.setattr(check, "_run", spy)
    check.check(clean_db, 4)
    assert set(seen) == {"repeatable read"}


def test_bazaar_check_prints_a_line_per_invariant_and_exits_1_on_a_failure(
        rt, clock, clean_db, process_env):
    build_world(rt, clock)

    def bazaar_check() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "web.cli", "check", "--settle", "5"],
                              cwd=ROOT, env={**os.environ, **process_env}, capture_output=True,
                              text=True, timeout=60)

    holds = bazaar_check()
    assert holds.returncode == 0, holds.stdout + holds.stderr
    assert len(holds.stdout.splitlines()) == len(check.INVARIANTS) + 1
    clean_db.execute_sql("UPDATE products SET stock = stock + 1")  # not seen: no initial stock
    clean_db.execute_sql("UPDATE posts SET comment_count = 7")
    broken = bazaar_check()
    assert broken.returncode == 1
    lines = {line.split("  ")[0]: line for line in broken.stdout.splitlines()}
    feed_line = lines["feed counts equal rows"]
    assert "FAIL" in feed_line and "post 1: like_count 1 for 1 likes, comment_count 7" in feed_line
    assert "SKIP" in lines["stock conserved"]
