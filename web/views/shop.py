"""``/products``, ``/cart``, ``/orders``, ``/coupons``: the shop's reads and synchronous
writes, and the door check of ``coupons.issue`` (orders and coupons are commands)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from jobs import bestsellers, catalog, coupons, orders
from jobs.clock import utcnow
from jobs.errors import DomainError, InvalidRequest
from jobs.fields import naive_utc
from web.auth import require_admin, require_user
from web.commands import DB, idempotency_key
from web.responses import json_response
from web.routing import Query, Route
from web.shapes import Int, Items, Page, Text
from web.validation import PAGING, page_params, path_id, query_int
from workers.coupon_gate import CouponGate
from workers.rankings import BestSellerCache

COUPON_GATE = web.AppKey("coupon_gate", CouponGate)
BEST_SELLERS = web.AppKey("best_sellers", BestSellerCache)
GATE_READS = web.AppKey("gate_reads", dict)  # coupon id -> the database read in flight


def gate_state_once(request: web.Request) -> Callable[[int], Awaitable]:
    """``coupons.gate_state`` for a gate that must be rebuilt, read once per process
    however many requests find the gate missing at the same moment (the first burst)."""
    reads, db = request.app[GATE_READS], request.app[DB]

    def read(coupon_id: int) -> Awaitable:
        flight = reads.get(coupon_id)
        if flight is None:
            flight = reads[coupon_id] = asyncio.ensure_future(db(coupons.gate_state, coupon_id))
            flight.add_done_callback(lambda _: reads.pop(coupon_id, None))
        return asyncio.shield(flight)

    return read
Moment = Annotated[datetime, msgspec.Meta(tz=True)]


class NewProduct(msgspec.Struct, forbid_unknown_fields=True):
    """A product for the catalog."""

    name: Text(1, 200)
    price: Int(0, 1_000_000_000)
    stock: Int(0, 1_000_000)
    description: Text(0, 10_000) = ""


class CartQuantity(msgspec.Struct, forbid_unknown_fields=True):
    """How many of the product the cart holds."""

    quantity: Int(1, 1_000)


class NewCoupon(msgspec.Struct, forbid_unknown_fields=True):
    """A first-come coupon: ``stock`` of them, issuable from ``starts_at`` to ``ends_at``."""

    name: Text(1, 200)
    discount_type: Literal["FIXED", "PERCENT"]
    discount_value: Int(1, 1_000_000_000)
    stock: Int(0, 10_000_000)
    starts_at: Moment
    ends_at: Moment

    def __post_init__(self) -> None:
        if self.ends_at <= self.starts_at:
            raise InvalidRequest({"ends_at": "must be after starts_at"})
        if self.discount_type == "PERCENT" and self.discount_value > 100:
            raise InvalidRequest({"discount_value": "a PERCENT discount must be 1..100"})


class Product(msgspec.Struct):
    """A product."""

    id: int
    name: str
    price: int
    stock: int
    description: str | None = None


class BestSeller(msgspec.Struct):
    """A product and its units sold over the last 3 days."""

    id: int
    name: str
    price: int
    stock: int
    sales: int


class CartLine(msgspec.Struct):
    """A line of the cart."""

    product_id: int
    name: str
    price: int
    quantity: int


class Cart(msgspec.Struct):
    """The caller's cart."""

    items: list[CartLine]
    total: int


class OrderItem(msgspec.Struct):
    """A line of an order."""

    product_id: int
    quantity: int
    unit_price: int


class Order(msgspec.Struct):
    """An order."""

    id: int
    status: str
    total: int
    discount: int
    pay_amount: int
    items: list[OrderItem]
    created_at: str
    expires_at: str
    paid_at: str | None
    user_coupon_id: int | None


class Coupon(msgspec.Struct):
    """A coupon and how many remain."""

    id: int
    name: str
    discount_type: str
    discount_value: int
    remaining: int
    starts_at: str
    ends_at: str


class MyCoupon(msgspec.Struct):
    """A coupon the caller holds."""

    user_coupon_id: int
    coupon_id: int
    name: str
    discount_type: str
    discount_value: int
    used: bool
    expires_at: str


async def list_products(request: web.Request) -> web.Response:
    """``GET /products``."""
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](catalog.list_products, limit, cursor))


async def get_product(request: web.Request) -> web.Response:
    """``GET /products/{id}``."""
    product_id = path_id(request, "product_id", "PRODUCT_NOT_FOUND")
    return json_response(await request.app[DB](catalog.get_product, product_id))


async def best_products(request: web.Request) -> web.Response:
    """``GET /products/best``: the top 5 of the last 3 days, from the scheduled aggregation."""
    cache = request.app[BEST_SELLERS]
    ranking = cache.parse(await cache.load())
    db = request.app[DB]
    if ranking is None:
        ranking = await db(bestsellers.top_sellers, utcnow())
    return json_response({"items": await db(bestsellers.with_products, ranking)})


async def create_product(request: web.Request, body: NewProduct) -> web.Response:
    """``POST /admin/products`` (admin)."""
    await require_admin(request)
    product = await request.app[DB](catalog.create_product, body.name, body.price, body.stock,
                                    body.description, utcnow())
    return json_response(product, 201)


async def get_cart(request: web.Request) -> web.Response:
    """``GET /cart``."""
    user_id = await require_user(request)
    return json_response(await request.app[DB](catalog.cart, user_id))


async def put_cart_item(request: web.Request, body: CartQuantity) -> web.Response:
    """``PUT /cart/items/{product_id}``: set the quantity."""
    user_id = await require_user(request)
    product_id = path_id(request, "product_id", "PRODUCT_NOT_FOUND")
    return json_response(
        await request.app[DB](catalog.set_cart_quantity, user_id, product_id, body.quantity))


async def delete_cart_item(request: web.Request) -> web.Response:
    """``DELETE /cart/items/{product_id}?quantity=``: reduce, or remove entirely."""
    user_id = await require_user(request)
    product_id = path_id(request, "product_id", "CART_ITEM_NOT_FOUND")
    raw = request.query.get("quantity")
    quantity = None if raw is None else query_int(raw, "quantity", 1, 1_000)
    return json_response(
        await request.app[DB](catalog.reduce_cart_quantity, user_id, product_id, quantity))


async def list_orders(request: web.Request) -> web.Response:
    """``GET /orders``."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](orders.list_orders, user_id, limit, cursor))


async def get_order(request: web.Request) -> web.Response:
    """``GET /orders/{id}``."""
    user_id = await require_user(request)
    order_id = path_id(request, "order_id", "ORDER_NOT_FOUND")
    return json_response(await request.app[DB](orders.get_order, user_id, order_id))


async def create_coupon(request: web.Request, body: NewCoupon) -> web.Response:
    """``POST /admin/coupons`` (admin)."""
    await require_admin(request)
    starts, ends = naive_utc(body.starts_at, "starts_at"), naive_utc(body.ends_at, "ends_at")
    coupon = await request.app[DB](coupons.create_coupon, body.name, body.discount_type,
                                   body.discount_value, body.stock, starts, ends, utcnow())
    return json_response(coupon, 201)


async def list_coupons(request: web.Request) -> web.Response:
    """``GET /coupons``."""
    await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](coupons.list_coupons, limit, cursor))


async def my_coupons(request: web.Request) -> web.Response:
    """``GET /users/me/coupons``."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](coupons.my_coupons, user_id, limit, cursor))


async def coupon_door(request: web.Request, user_id: int, fields: dict) -> DomainError | None:
    """``coupons.issue`` at the door: 404 for an unknown coupon; without an
    Idempotency-Key, the gate turns away a request that cannot win (it becomes a job
    recorded already failed, and no worker or coupon row is touched for it)."""
    coupon_id, db = fields["coupon_id"], request.app[DB]
    if idempotency_key(request) is not None:
        await db(coupons.get_coupon, coupon_id)
        return None
    try:
        await request.app[COUPON_GATE].admit(coupon_id, user_id, utcnow(),
                                             gate_state_once(request))
    except DomainError as e:
        if e.code == "COUPON_NOT_FOUND":
            raise
        return e
    return None


DOORS = {"coupons.issue": coupon_door}
ROUTES = [
    Route("GET", "/products", list_products, "The catalog", response=Page[Product],
          auth="none", query=PAGING),
    Route("GET", "/products/best", best_products, "Top 5 by units sold over 3 days",
          response=Items[BestSeller], auth="none"),
    Route("GET", "/products/{product_id}", get_product, "One product", response=Product,
          errors=("PRODUCT_NOT_FOUND",), auth="none"),
    Route("POST", "/admin/products", create_product, "Add a product (admin)",
          body=NewProduct, response=Product, status=201, errors=("INVALID_PERMISSION",),
          auth="admin"),
    Route("GET", "/cart", get_cart, "The caller's cart", response=Cart),
    Route("PUT", "/cart/items/{product_id}", put_cart_item, "Set a product's quantity",
          body=CartQuantity, response=Cart, errors=("PRODUCT_NOT_FOUND", "OUT_OF_STOCK")),
    Route("DELETE", "/cart/items/{product_id}", delete_cart_item, "Reduce or remove a line",
          response=Cart, errors=("CART_ITEM_NOT_FOUND", "INSUFFICIENT_CART_QUANTITY"),
          query=(Query("quantity", int, "how many to remove (default: all)"),)),
    Route("GET", "/orders", list_orders, "The caller's orders", response=Page[Order],
          query=PAGING),
    Route("GET", "/orders/{order_id}", get_order, "One order", response=Order,
          errors=("ORDER_NOT_FOUND",)),
    Route("POST", "/admin/coupons", create_coupon, "Add a coupon (admin)", body=NewCoupon,
          response=Coupon, status=201, errors=("INVALID_PERMISSION",), auth="admin"),
    Route("GET", "/coupons", list_coupons, "Coupons and how many remain",
          response=Page[Coupon], query=PAGING),
    Route("GET", "/users/me/coupons", my_coupons, "The caller's coupons",
          response=Page[MyCoupon], query=PAGING),
]
