"""Peewee models, one module per domain; import them from here."""

from db.models.auction import Artwork, ArtworkEvent, Bid, Bidder
from db.models.base import BaseModel, JSONField
from db.models.concerts import Concert, ConcertDate, ConcertPayment, Reservation
from db.models.feed import Alarm, AlarmInbox, Comment, Post, PostLike
from db.models.jobs import Job, JobStatus, PeriodicRun
from db.models.points import PointHistory, PointWallet
from db.models.shop import (
    CartItem,
    Coupon,
    Order,
    OrderItem,
    OutboxEvent,
    Product,
    ProductSalesDaily,
    UserCoupon,
)
from db.models.users import RevokedSession, SpentRefreshToken, User

ALL_MODELS = [
    User, PointWallet, PointHistory, Job, PeriodicRun,
    Product, CartItem, Coupon, UserCoupon, Order, OrderItem, ProductSalesDaily, OutboxEvent,
    Concert, ConcertDate, Reservation, ConcertPayment,
    Artwork, Bidder, Bid, ArtworkEvent,
    Post, PostLike, Comment, AlarmInbox, Alarm, RevokedSession, SpentRefreshToken,
]

__all__ = [
    "ALL_MODELS",
    "Alarm",
    "AlarmInbox",
    "Artwork",
    "ArtworkEvent",
    "BaseModel",
    "Bid",
    "Bidder",
    "CartItem",
    "Comment",
    "Concert",
    "ConcertDate",
    "ConcertPayment",
    "Coupon",
    "JSONField",
    "Job",
    "JobStatus",
    "Order",
    "OrderItem",
    "OutboxEvent",
    "PeriodicRun",
    "PointHistory",
    "PointWallet",
    "Post",
    "PostLike",
    "Product",
    "ProductSalesDaily",
    "Reservation",
    "RevokedSession",
    "SpentRefreshToken",
    "User",
    "UserCoupon",
]
