"""Demo data: a small catalog, two live coupons, a concert and two users, to try things at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from db.connection import database
from db.models import Concert, Coupon, Product, User
from jobs import catalog, concerts, coupons, points, users

PRODUCTS = [
    ("Mechanical keyboard", 89_000, 40, "Tactile switches, hot-swappable."),
    ("Wireless mouse", 39_000, 100, "Two-week battery."),
    ("27-inch monitor", 329_000, 15, "1440p, 144 Hz."),
    ("USB-C hub", 45_000, 60, "Seven ports."),
    ("Laptop stand", 29_000, 80, "Aluminium, foldable."),
    ("Noise-cancelling headphones", 259_000, 25, "30-hour battery."),
    ("Webcam", 69_000, 50, "1080p, privacy shutter."),
    ("Desk lamp", 35_000, 70, "Dimmable, warm to cool."),
]


def load_demo_data(hash_password: Callable[[str], str], now: datetime) -> dict:
    """Create what is missing of the demo set; returns what was created."""
    created = {"products": 0, "coupons": 0, "concerts": 0, "users": []}
    with database.atomic():
        if not Product.select().exists():
            for name, price, stock, description in PRODUCTS:
                catalog.create_product(name, price, stock, description, now)
                created["products"] += 1
        if not Coupon.select().exists():
            coupons.create_coupon("Welcome 5,000 off", "FIXED", 5_000, 100, now,
                                  now + timedelta(days=30), now)
            coupons.create_coupon("Flash sale 10%", "PERCENT", 10, 20, now,
                                  now + timedelta(days=7), now)
            created["coupons"] = 2
        if not Concert.select().exists():
            first = now.date() + timedelta(days=14)
            concerts.create_concert("Bazaar Symphony Night", [
                (first, 120_000), (first + timedelta(days=1), 120_000),
                (first + timedelta(days=7), 150_000)], now)
            created["concerts"] = 1
        for username, password, admin in (("admin", "admin-password", True),
                                          ("demo", "demo-password", False)):
            if User.select().where(User.username == username).exists():
                continue
            user = users.create_user(username, hash_password(password), now, is_admin=admin)
            points.charge(user.id, 1_000_000, "demo", now)
            created["users"].append(f"{username} / {password}")
    return created
