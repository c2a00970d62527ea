"""The shop's commands and periodic work, declared on the platform.

The rules live in ``catalog``, ``orders``, ``coupons`` and ``bestsellers``; this module
says which of them are commands (with their payload schemas), which run periodically,
and what happens after commit.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from db.models import (
    CartItem,
    Coupon,
    Order,
    OrderItem,
    Product,
    ProductSalesDaily,
    UserCoupon,
)
from jobs import bestsellers, coupons, orders
from jobs.errors import InvalidRequest
from jobs.fields import Positive
from jobs.platform import Command, Context, Domain, Event, Periodic

Id = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000)]
MAX_LINES = 50


class ShopSettings(msgspec.Struct, frozen=True):
    """How often unpaid orders expire and best sellers are recounted (seconds)."""

    order_expiry_interval: Positive = 2
    sales_interval: Positive = 60


class OrderLine(msgspec.Struct, forbid_unknown_fields=True):
    """One product and how many."""

    product_id: Id
    quantity: Quantity


Lines = Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_LINES)]


class NewOrder(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``orders.create``: ``items``, or ``from_cart: true``; optionally a coupon."""

    items: Lines | None = None
    from_cart: bool | None = None
    user_coupon_id: Id | None = None

    def __post_init__(self) -> None:
        if (self.items is None) == (self.from_cart is not True):
            raise InvalidRequest({"items": "give either items or from_cart: true"})
        if self.items and len({line.product_id for line in self.items}) != len(self.items):
            raise InvalidRequest({"items": "each product may appear once"})


class PayOrder(msgspec.Struct, forbid_unknown_fields=True):
    """``orders.pay``: the order to pay (from the URL)."""

    order_id: Annotated[int, msgspec.Meta(ge=1)]


class IssueCoupon(msgspec.Struct, forbid_unknown_fields=True):
    """``coupons.issue``: the coupon wanted (from the URL)."""

    coupon_id: Annotated[int, msgspec.Meta(ge=1)]


class OrderCreated(msgspec.Struct):
    """A NOT_PAID order holding its stock."""

    order_id: int
    status: str
    total: int
    discount: int
    pay_amount: int
    expires_at: str


class OrderPaid(msgspec.Struct):
    """A PAID order and the balance left."""

    order_id: int
    status: str
    balance: int


class CouponIssued(msgspec.Struct):
    """The user's new coupon."""

    user_coupon_id: int
    coupon_id: int
    expires_at: str


def create_order(ctx: Context, cmd: NewOrder) -> dict:
    """``orders.create``: take stock and record a NOT_PAID order."""
    lines = None if cmd.items is None else [(i.product_id, i.quantity) for i in cmd.items]
    return orders.create_order(ctx.user_id, lines, cmd.user_coupon_id, ctx.now)


def pay_order(ctx: Context, cmd: PayOrder) -> dict:
    """``orders.pay``: spend points, mark the order PAID; ``order.paid`` goes to the outbox."""
    return orders.pay_order(ctx.user_id, cmd.order_id, ctx.now, ctx.emit)


def admit_to_coupon(ctx: Context, cmd: IssueCoupon) -> None:
    """Before the transaction: the Redis gate turns away requests that cannot win."""
    ctx.services.coupon_gate.admit(cmd.coupon_id, ctx.user_id, ctx.now, coupons.gate_state)


def issue_coupon(ctx: Context, cmd: IssueCoupon) -> dict:
    """``coupons.issue``: the database decides."""
    return coupons.issue_coupon(ctx.user_id, cmd.coupon_id, ctx.now)


def settle_coupon_place(ctx: Context, cmd: IssueCoupon, code: str) -> None:
    """After a failure was committed: give the gate's place back, or close the gate."""
    gate = ctx.services.coupon_gate
    if code == "COUPON_SOLD_OUT":  # the gate over-admitted (it was rebuilt)
        gate.mark_sold_out(cmd.coupon_id)
    elif code != "COUPON_ALREADY_ISSUED":
        gate.give_back(cmd.coupon_id, ctx.user_id)


def expire_orders(ctx: Context) -> dict:
    """Expire unpaid orders past their deadline."""
    return {"expired": orders.expire_unpaid_orders(ctx.now)}


def aggregate_sales(ctx: Context) -> dict:
    """Recount daily sales; the ranking reaches the cache after commit."""
    ranking = bestsellers.aggregate_sales(ctx.now)
    ctx.emit("sales.ranked", {"ranking": ranking})
    return {"ranked": len(ranking)}


def cache_ranking(ctx: Context, event: Event) -> None:
    """Store the committed ranking where ``GET /products/best`` reads it."""
    ctx.services.best_sellers.store(event.data["ranking"])


DOMAIN = Domain(
    name="shop",
    commands=(
        Command("orders.create", NewOrder, create_order, "POST", "/orders",
                "Create an order (stock is taken now)", result=OrderCreated,
                errors=("PRODUCT_NOT_FOUND", "OUT_OF_STOCK", "CART_EMPTY", "COUPON_NOT_FOUND",
                        "COUPON_ALREADY_USED", "COUPON_EXPIRED")),
        Command("orders.pay", PayOrder, pay_order, "POST", "/orders/{order_id}/payment",
                "Pay an order with points", result=OrderPaid, not_found="ORDER_NOT_FOUND",
                errors=("ORDER_NOT_FOUND", "ORDER_EXPIRED", "ORDER_ALREADY_PAID",
                        "INSUFFICIENT_POINTS")),
        Command("coupons.issue", IssueCoupon, issue_coupon, "POST",
                "/coupons/{coupon_id}/issue", "Take a first-come coupon", result=CouponIssued,
                not_found="COUPON_NOT_FOUND", gate=admit_to_coupon, give_up=settle_coupon_place,
                errors=("COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED", "COUPON_NOT_ACTIVE")),
    ),
    periodic=(
        Periodic("orders.expire", expire_orders, every="order_expiry_interval"),
        Periodic("sales.aggregate", aggregate_sales, every="sales_interval"),
    ),
    reactions={"sales.ranked": cache_ranking},
    outbox_topics=frozenset({"order.paid"}),
    models=(Product, CartItem, Coupon, UserCoupon, Order, OrderItem, ProductSalesDaily),
    settings=ShopSettings,
)
