"""Builders for shop tests: users with points, products, coupons."""

from __future__ import annotations

from datetime import datetime, timedelta

from db.connection import database
from db.models import Coupon, Product, UserCoupon
from jobs import points, users


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
