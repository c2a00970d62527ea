"""First-come coupons. PostgreSQL is the truth: UNIQUE (user, coupon) and CHECK issued <= stock.

The Redis gate in ``workers.coupon_gate`` turns most losers away before this code runs.
"""

from __future__ import annotations

from datetime import datetime

import peewee

from db.models import Coupon, UserCoupon
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.pagination import id_page


def coupon_view(c: Coupon) -> dict:
    """The API's coupon body."""
    return {"id": c.id, "name": c.name, "discount_type": c.discount_type,
            "discount_value": c.discount_value, "remaining": c.stock - c.issued,
            "starts_at": iso(c.starts_at), "ends_at": iso(c.ends_at)}


def create_coupon(name: str, discount_type: str, discount_value: int, stock: int,
                  starts_at: datetime, ends_at: datetime, now: datetime) -> dict:
    """Add a coupon."""
    coupon = Coupon.create(name=name, discount_type=discount_type, discount_value=discount_value,
                           stock=stock, issued=0, starts_at=starts_at, ends_at=ends_at,
                           created_at=now)
    return coupon_view(coupon)


def get_coupon(coupon_id: int) -> Coupon:
    """The coupon, or ``COUPON_NOT_FOUND``."""
    coupon = Coupon.get_or_none(Coupon.id == coupon_id)
    if coupon is None:
        raise DomainError("COUPON_NOT_FOUND", "no such coupon")
    return coupon


def list_coupons(limit: int, cursor: str | None) -> dict:
    """Coupons, one page."""
    items, next_cursor = id_page(Coupon.select(), Coupon.id, limit, cursor)
    return {"items": [coupon_view(c) for c in items], "next_cursor": next_cursor}


def gate_state(coupon_id: int) -> tuple[Coupon, list[int]]:
    """What the Redis gate needs to rebuild itself: the coupon and who already holds one."""
    coupon = get_coupon(coupon_id)
    holders = [uid for (uid,) in UserCoupon.select(UserCoupon.user)
               .where(UserCoupon.coupon == coupon_id).tuples()]
    return coupon, holders


def issue_coupon(user_id: int, coupon_id: int, now: datetime) -> dict:
    """Inside a transaction: give the user one of the coupon's remaining stock."""
    coupon = get_coupon(coupon_id)
    if not coupon.starts_at <= now < coupon.ends_at:
        raise DomainError("COUPON_NOT_ACTIVE", "this coupon cannot be issued now")
    try:
        held = UserCoupon.create(user=user_id, coupon=coupon_id, used=False,
                                 expires_at=coupon.ends_at, created_at=now)
    except peewee.IntegrityError:
        raise DomainError("COUPON_ALREADY_ISSUED", "you already have this coupon") from None
    taken = (Coupon.update(issued=Coupon.issued + 1)
             .where((Coupon.id == coupon_id) & (Coupon.issued < Coupon.stock)).execute())
    if not taken:
        raise DomainError("COUPON_SOLD_OUT", "no coupons left")
    return {"user_coupon_id": held.id, "coupon_id": coupon_id, "expires_at": iso(held.expires_at)}


def my_coupons(user_id: int, limit: int, cursor: str | None) -> dict:
    """The user's coupons, newest first."""
    query = (UserCoupon.select(UserCoupon, Coupon).join(Coupon)
             .where(UserCoupon.user == user_id))
    items, next_cursor = id_page(query, UserCoupon.id, limit, cursor, newest_first=True)
    return {"items": [{
        "user_coupon_id": u.id, "coupon_id": u.coupon.id, "name": u.coupon.name,
        "discount_type": u.coupon.discount_type, "discount_value": u.coupon.discount_value,
        "used": u.used, "expires_at": iso(u.expires_at),
    } for u in items], "next_cursor": next_cursor}
