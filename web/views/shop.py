"""``/products``, ``/cart``, ``/orders``: the catalog, carts, and orders (jobs)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from jobs import bestsellers, catalog, orders
from jobs.clock import utcnow
from jobs.errors import InvalidRequest
from web.auth import require_admin, require_user
from web.commands import DB, GATEWAY
from web.responses import json_response
from web.validation import (
    Anything,
    Bool,
    Int,
    Str,
    page_params,
    path_id,
    query_int,
    read_body,
    read_json,
    validate,
)
from web.views.ops import REDIS
from web.views.users import SETTINGS
from workers.periodic import best_sellers_key

NEW_PRODUCT = {
    "name": Str(1, 200),
    "price": Int(0, 1_000_000_000),
    "stock": Int(0, 1_000_000),
    "description": Str(0, 10_000, required=False),
}
CART_QUANTITY = {"quantity": Int(1, 1_000)}
ORDER_LINE = {"product_id": Int(1, 2**53), "quantity": Int(1, 1_000)}
NEW_ORDER = {
    "items": Anything(required=False),  # a list of ORDER_LINE, checked in order_payload
    "from_cart": Bool(required=False),
    "user_coupon_id": Int(1, 2**53, required=False),
}
MAX_LINES = 50


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
    cached = await request.app[REDIS].get(best_sellers_key(request.app[SETTINGS].redis_prefix))
    db = request.app[DB]
    ranking = json.loads(cached) if cached else await db(bestsellers.top_sellers, utcnow())
    return json_response({"items": await db(bestsellers.with_products, ranking)})


async def create_product(request: web.Request) -> web.Response:
    """``POST /admin/products`` (admin)."""
    await require_admin(request)
    body = await read_json(request, NEW_PRODUCT)
    product = await request.app[DB](catalog.create_product, body["name"], body["price"],
                                    body["stock"], body.get("description", ""), utcnow())
    return json_response(product, 201)


async def get_cart(request: web.Request) -> web.Response:
    """``GET /cart``."""
    user_id = await require_user(request)
    return json_response(await request.app[DB](catalog.cart, user_id))


async def put_cart_item(request: web.Request) -> web.Response:
    """``PUT /cart/items/{product_id}``: set the quantity."""
    user_id = await require_user(request)
    product_id = path_id(request, "product_id", "PRODUCT_NOT_FOUND")
    body = await read_json(request, CART_QUANTITY)
    return json_response(
        await request.app[DB](catalog.set_cart_quantity, user_id, product_id, body["quantity"]))


async def delete_cart_item(request: web.Request) -> web.Response:
    """``DELETE /cart/items/{product_id}?quantity=``: reduce, or remove entirely."""
    user_id = await require_user(request)
    product_id = path_id(request, "product_id", "CART_ITEM_NOT_FOUND")
    raw = request.query.get("quantity")
    quantity = None if raw is None else query_int(raw, "quantity", 1, 1_000)
    return json_response(
        await request.app[DB](catalog.reduce_cart_quantity, user_id, product_id, quantity))


def order_payload(body: Any) -> dict:
    """Check an order body: ``items`` or ``from_cart: true``, and an optional coupon."""
    validate(body, NEW_ORDER)
    from_cart, items = body.get("from_cart"), body.get("items")
    if (items is None) == (from_cart is not True):
        raise InvalidRequest({"items": "give either items or from_cart: true"})
    payload: dict[str, Any] = {}
    if items is not None:
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_LINES:
            raise InvalidRequest({"items": f"must be a list of 1..{MAX_LINES} lines"})
        problems = {}
        for n, line in enumerate(items):
            try:
                validate(line, ORDER_LINE)
            except InvalidRequest as e:
                problems |= {f"items[{n}].{k}": v for k, v in e.fields.items()}
        if problems:
            raise InvalidRequest(problems)
        if len({line["product_id"] for line in items}) != len(items):
            raise InvalidRequest({"items": "each product may appear once"})
        payload["items"] = [{"product_id": i["product_id"], "quantity": i["quantity"]}
                            for i in items]
    else:
        payload["from_cart"] = True
    if "user_coupon_id" in body:
        payload["user_coupon_id"] = body["user_coupon_id"]
    return payload


async def create_order(request: web.Request) -> web.Response:
    """``POST /orders`` -> job ``orders.create``."""
    user_id = await require_user(request)
    payload = order_payload(await read_body(request))
    return await request.app[GATEWAY].submit(request, user_id, "orders.create", payload)


async def pay_order(request: web.Request) -> web.Response:
    """``POST /orders/{id}/payment`` -> job ``orders.pay``."""
    user_id = await require_user(request)
    order_id = path_id(request, "order_id", "ORDER_NOT_FOUND")
    await read_json(request, {})
    return await request.app[GATEWAY].submit(request, user_id, "orders.pay",
                                             {"order_id": order_id})


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
