"""Demo data: a small catalog, two live coupons, a concert, an auction with two artists
and bids under way, a feed with posts, likes and comments, and users, to try things at
once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from db.connection import database
from db.models import Artwork, Concert, Coupon, Post, Product, User
from jobs import auction, catalog, concerts, coupons, feed, points, users
from jobs.platform import Context

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
    created = {"products": 0, "coupons": 0, "concerts": 0, "artworks": 0, "posts": 0,
               "users": []}
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
        if not Artwork.select().exists():
            created["artworks"] = _auction(hash_password, now)
            created["users"] += [f"{n} / {n}-password" for n in AUCTION_PEOPLE]
        if not Post.select().exists():
            created["posts"] = _feed(hash_password, now)
            created["users"] += [f"{n} / {n}-password" for n in FEED_PEOPLE]
    return created


ARTWORKS = [  # (artist, title, genre, start price, instant price, days to run)
    (0, "Harbour at dusk", "PAINTING", 50_000, 400_000, 3),
    (0, "Salt and iron", "SCULPTURE", 120_000, None, 5),
    (1, "Night market, Seoul", "PHOTOGRAPHY", 20_000, 90_000, 2),
    (1, "Paper cranes", "DRAWING", 10_000, None, 7),
]
AUCTION_PEOPLE = ("ana_artist", "ben_artist", "collector", "patron")
BIDS = [(0, 0, 50_000, 80_000), (0, 1, 60_000, None), (2, 1, 20_000, 35_000),
        (2, 0, 25_000, 30_000), (3, 0, 10_000, None)]  # (artwork, bidder, amount, maximum)


def _auction(hash_password: Callable[[str], str], now: datetime) -> int:
    """Two artists, four open artworks, and bids on three of them (by the rules)."""
    artists = [users.create_user(name, hash_password(f"{name}-password"), now,
                                 is_artist=True).id for name in AUCTION_PEOPLE[:2]]
    bidders = []
    for name in AUCTION_PEOPLE[2:]:
        uid = users.create_user(name, hash_password(f"{name}-password"), now).id
        points.charge(uid, 1_000_000, "demo", now)
        bidders.append(uid)
    works = [auction.create_artwork(artists[a], title, genre, None, start, instant,
                                    now + timedelta(days=days), now)["id"]
             for a, title, genre, start, instant, days in ARTWORKS]
    settings = auction.AuctionSettings()
    for work, bidder, amount, maximum in BIDS:
        auction.place_bid(Context(now=now, user_id=bidders[bidder]), works[work], amount,
                          maximum, settings)
    return len(works)


FEED_PEOPLE = ("mina", "jun", "sora")
POSTS = [  # (author, title, body, minutes ago)
    (0, "First light", "Up before the city. The river was glass.", 180),
    (1, "Sourdough, day 3", "The starter finally doubled. Bread on Sunday.", 120),
    (2, "Looking for a climbing partner", "Weekday evenings, bouldering, beginners welcome.",
     60),
    (0, "Reading list", "Three novels, one poetry collection, zero excuses.", 30),
    (1, "Bike repair tip", "A drop of oil on the chain, then wipe it all off again.", 5),
]
LIKES = [(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 3), (2, 3), (0, 4)]  # (liker, post)
COMMENTS = [(1, 0, "Gorgeous morning."), (0, 1, "Save me a slice!"),
            (1, 1, "Will do."), (1, 2, "Count me in for Thursday."),
            (2, 3, "The poetry first, please.")]  # (author, post, text)


def _feed(hash_password: Callable[[str], str], now: datetime) -> int:
    """Three users, five posts, and likes and comments on them (with their alarms),
    through the same rules the commands use."""
    people = [users.create_user(name, hash_password(f"{name}-password"), now).id
              for name in FEED_PEOPLE]
    posts = [feed.create_post(people[a], title, body, now - timedelta(minutes=ago))["id"]
             for a, title, body, ago in POSTS]
    for liker, post in LIKES:
        feed.like(Context(now=now, user_id=people[liker]), posts[post])
    for author, post, text in COMMENTS:
        feed.comment(Context(now=now, user_id=people[author]), posts[post], text)
    return len(posts)
