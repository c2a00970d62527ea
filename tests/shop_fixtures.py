"""Builders for shop tests: users with points, products, coupons."""

from __future__ import annotations

from datetime import datetime, timedelta

from db.connection import database
from db.models import Coupon, PointHistory, PointWallet, Product, User, UserCoupon
from jobs import points, users
from jobs.clock import utcnow
from web.auth import Tokens


def user_with_points(name: str, balance: int, now: datetime) -> int:
    uid = users.create_user(name, "x", now).id
    if balance:
        with database.atomic():
            points.charge(uid, balance, "seed", now)
    return uid


def product(name: str, price: int, stock: int, now: datetime) -> int:
    return Product.create(name=name, price=price, stock=stock, description="",
                          created_at=now).id


def coupon(now: datetime, kind: str = "FIXED", value: int = 1_000, stock: int = 10,
           starts: timedelta = timedelta(days=-1), ends: timedelta = timedelta(days=1)) -> int:
    return Coupon.create(name=f"{kind} {value}", discount_type=kind, discount_value=value,
                         stock=stock, issued=0, starts_at=now + starts, ends_at=now + ends,
                         created_at=now).id


def give_coupon(user_id: int, coupon_id: int, expires_at: datetime, now: datetime) -> int:
    return UserCoupon.create(user=user_id, coupon=coupon_id, expires_at=expires_at,
                             created_at=now).id


def stock_of(product_id: int) -> int:
    return Product.get_by_id(product_id).stock


def bulk_users(database, settings, prefix: str, count: int, balance: int = 0) -> list[str]:
    """``count`` users created straight in the database; their access tokens."""
    now = utcnow()
    with database.connection_context(), database.atomic():
        rows = [{"username": f"{prefix}{n}", "password_hash": "x", "created_at": now}
                for n in range(count)]
        for start in range(0, count, 1000):
            User.insert_many(rows[start:start + 1000]).execute()
        ids = [u.id for u in User.select(User.id).where(User.username.startswith(prefix))
               .order_by(User.id)]
        for start in range(0, count, 1000):
            chunk = ids[start:start + 1000]
            PointWallet.insert_many([{"user": uid, "balance": balance, "updated_at": now}
                                     for uid in chunk]).execute()
            if balance:  # seeded points are a CHARGE, so history still sums to the balance
                PointHistory.insert_many([
                    {"user": uid, "type": "CHARGE", "amount": balance, "balance_after": balance,
                     "ref": "seed", "created_at": now} for uid in chunk]).execute()
    tokens = Tokens(settings.jwt_secret, 3600, 3600, None, settings.redis_prefix)
    return [tokens.issue(uid)["access_token"] for uid in ids]
