"""The art auction: artworks, each bidder's hidden maximum, the visible bids, the event log.

The artwork row is the auction's state and its lock: every bid, buy-now and close takes
``SELECT ... FOR UPDATE`` on it first, so they apply one at a time. ``version`` counts
the events of the artwork; each one is also a row of :class:`ArtworkEvent`, written in
the same transaction, which is what a live stream replays after a reconnect.
"""

from __future__ import annotations

import peewee

from db.models.base import BaseModel, JSONField
from db.models.users import User


class Artwork(BaseModel):
    """An artwork on sale: its prices, its leader (hidden maximum), its end, its outcome."""

    id = peewee.BigAutoField()
    artist = peewee.ForeignKeyField(User, on_delete="CASCADE")
    title = peewee.CharField(max_length=200)
    genre = peewee.CharField(max_length=12)
    description = peewee.TextField(null=True)
    start_price = peewee.BigIntegerField(constraints=[peewee.Check("start_price >= 100")])
    instant_price = peewee.BigIntegerField(null=True)
    price = peewee.BigIntegerField(null=True)
    bid_count = peewee.IntegerField(default=0)
    leader = peewee.ForeignKeyField(User, null=True, on_delete="SET NULL")
    leader_max = peewee.BigIntegerField(null=True)
    second_max = peewee.BigIntegerField(null=True)
    ends_at = peewee.DateTimeField()
    original_ends_at = peewee.DateTimeField()
    status = peewee.CharField(max_length=8, default="OPEN")
    winner = peewee.ForeignKeyField(User, null=True, on_delete="SET NULL")
    version = peewee.BigIntegerField(default=0)
    created_at = peewee.DateTimeField()
    closed_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "artworks"


class Bidder(BaseModel):
    """One bidder of one artwork and the highest maximum they had accepted (hidden)."""

    id = peewee.BigAutoField()
    artwork = peewee.ForeignKeyField(Artwork, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    max_amount = peewee.BigIntegerField()
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "artwork_bidders"
        indexes = ((("artwork", "user"), True), (("user", "id"), False))


class Bid(BaseModel):
    """A visible bid: what the price became, and for whom (``automatic``: a proxy raise)."""

    id = peewee.BigAutoField()
    artwork = peewee.ForeignKeyField(Artwork, on_delete="CASCADE")
    bidder = peewee.ForeignKeyField(User, on_delete="CASCADE")
    amount = peewee.BigIntegerField()
    automatic = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "artwork_bids"
        indexes = ((("artwork", "id"), False),)


class ArtworkEvent(BaseModel):
    """The artwork's live events (``bid``, ``closed``), numbered by its ``version``."""

    id = peewee.BigAutoField()
    artwork = peewee.ForeignKeyField(Artwork, on_delete="CASCADE")
    version = peewee.BigIntegerField()
    type = peewee.CharField(max_length=8)
    data = JSONField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "artwork_events"
        indexes = ((("artwork", "version"), True),)
