"""Contract tests for the shop: catalog, best sellers, cart, orders, payment and coupons.

Binding contract: /work/shared/API.md, sections "Conventions", "Commands and jobs",
"Catalog, cart, orders, payment" and "Coupons".

The module shares one database: every test creates its own users, products and coupons
and only looks at the ids it created.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from db.models import Order
from tests.support import admin_token, assert_failed, finish, now, parse_time, succeeded

WAIT = {"Prefer": "wait=5"}
PRODUCT_FIELDS = {"id", "name", "price", "stock", "description"}
LISTED_PRODUCT_FIELDS = {"id", "name", "price", "stock"}
COUPON_FIELDS = {"id", "name", "discount_type", "discount_value", "remaining", "starts_at",
                 "ends_at"}
MY_COUPON_FIELDS = {"user_coupon_id", "coupon_id", "name", "discount_type", "discount_value",
                    "used", "expires_at"}
ORDER_RESULT_FIELDS = {"order_id", "status", "total", "discount", "pay_amount", "expires_at"}


# -- helpers ---------------------------------------------------------------------------


def new_name() -> str:
    """A username no other test uses."""
    return f"s_{uuid.uuid4().hex[:10]}"


def walk(api, path: str, token: str | None = None, limit: int = 100) -> list[dict]:
    """Every item of a list endpoint, following ``next_cursor``."""
    items, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        reply = api.get(f"{path}{query}", token=token)
        assert reply.status == 200, reply
        items += reply.body["items"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return items


def add_product(api, admin: str, *, price: int = 1000, stock: int = 10, **extra) -> dict:
    """Create a product as the admin; its body."""
    body = {"name": f"product {uuid.uuid4().hex[:8]}", "price": price, "stock": stock, **extra}
    reply = api.post("/admin/products", body, token=admin)
    assert reply.status == 201, reply
    return reply.body


def stock_of(api, product_id: int) -> int:
    reply = api.get(f"/products/{product_id}")
    assert reply.status == 200, reply
    return reply.body["stock"]


def cart_of(api, token: str) -> dict:
    reply = api.get("/cart", token=token)
    assert reply.status == 200, reply
    return reply.body


def put_cart(api, token: str, product_id: int, quantity: int) -> dict:
    reply = api.call("PUT", f"/cart/items/{product_id}", {"quantity": quantity}, token=token)
    assert reply.status == 200, reply
    return reply.body


def order(api, token: str, body: dict) -> dict:
    """Submit ``POST /orders``; the terminal job."""
    return finish(api, api.post("/orders", body, token=token, headers=WAIT), token)


def order_lines(api, token: str, *lines: tuple[int, int], coupon: int | None = None) -> dict:
    """Order ``(product_id, quantity)`` lines (optionally with a coupon); the terminal job."""
    body: dict = {"items": [{"product_id": p, "quantity": q} for p, q in lines]}
    if coupon is not None:
        body["user_coupon_id"] = coupon
    return order(api, token, body)


def pay(api, token: str, order_id: int | str) -> dict:
    """Submit ``POST /orders/{id}/payment``; the terminal job."""
    return finish(api, api.post(f"/orders/{order_id}/payment", token=token, headers=WAIT),
                  token)


def charge(api, token: str, amount: int) -> None:
    job = finish(api, api.post("/points/charge", {"amount": amount}, token=token,
                               headers=WAIT), token)
    succeeded(job)


def balance(api, token: str) -> int:
    reply = api.get("/points", token=token)
    assert reply.status == 200, reply
    return reply.body["balance"]


def get_order(api, token: str, order_id: int) -> dict:
    reply = api.get(f"/orders/{order_id}", token=token)
    assert reply.status == 200, reply
    return reply.body


def coupon_body(**fields) -> dict:
    """A valid, currently active coupon body, with ``fields`` overriding."""
    body = {
        "name": f"coupon {uuid.uuid4().hex[:8]}",
        "discount_type": "FIXED",
        "discount_value": 500,
        "stock": 10,
        "starts_at": (now() - timedelta(hours=1)).isoformat(),
        "ends_at": (now() + timedelta(days=1)).isoformat(),
    }
    return body | fields


def add_coupon(api, admin: str, **fields) -> dict:
    reply = api.post("/admin/coupons", coupon_body(**fields), token=admin)
    assert reply.status == 201, reply
    return reply.body


def issue(api, token: str, coupon_id: int | str) -> dict:
    """Submit ``POST /coupons/{id}/issue``; the terminal job."""
    return finish(api, api.post(f"/coupons/{coupon_id}/issue", token=token, headers=WAIT),
                  token)


def issued_coupon(api, admin: str, token: str, **fields) -> int:
    """A new active coupon issued to the user; its ``user_coupon_id``."""
    coupon = add_coupon(api, admin, **fields)
    return succeeded(issue(api, token, coupon["id"]))["user_coupon_id"]


def my_coupon(api, token: str, user_coupon_id: int) -> dict:
    items = walk(api, "/users/me/coupons", token)
    [mine] = [c for c in items if c["user_coupon_id"] == user_coupon_id]
    return mine


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture
def token(api):
    """The access token of a fresh user."""
    return api.signup_login(new_name())


@pytest.fixture
def other(api):
    """The access token of a second fresh user."""
    return api.signup_login(new_name())


@pytest.fixture(scope="module")
def admin(stack, database):
    """The access token of a user holding the admin role."""
    return admin_token(stack.api, database)


# -- catalog: POST /admin/products -----------------------------------------------------


def test_admin_creates_a_product_201(api, admin):
    # Given an admin
    body = {"name": "Green tea", "price": 3500, "stock": 12, "description": "Jeju, 2024"}
    # When creating a product
    reply = api.post("/admin/products", body, token=admin)
    # Then it is created and returned with its id
    assert reply.status == 201, reply
    assert set(reply.body) == PRODUCT_FIELDS
    assert isinstance(reply.body["id"], int)
    assert {k: reply.body[k] for k in body} == body


def test_product_description_is_optional(api, admin):
    # Given a product body without a description
    # When an admin creates it
    product = add_product(api, admin)
    # Then its description is empty
    assert product["description"] == ""
    assert api.get(f"/products/{product['id']}").body["description"] == ""


@pytest.mark.parametrize(
    ("price", "stock", "name"),
    [(0, 0, "x"), (1_000_000_000, 1_000_000, "n" * 200)],
    ids=["lower-bounds", "upper-bounds"],
)
def test_product_bounds_are_accepted(api, admin, price, stock, name):
    # Given values at the edges of the allowed ranges
    # When an admin creates the product
    reply = api.post("/admin/products", {"name": name, "price": price, "stock": stock},
                     token=admin)
    # Then it is created as given
    assert reply.status == 201, reply
    assert (reply.body["name"], reply.body["price"], reply.body["stock"]) == (name, price, stock)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"price": -1}, "price"),
        ({"price": 1_000_000_001}, "price"),
        ({"price": 10.5}, "price"),
        ({"price": "100"}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": 1_000_001}, "stock"),
        ({"stock": True}, "stock"),
        ({"description": "d" * 10_001}, "description"),
        ({"sku": "A-1"}, "sku"),
        ({"name": None}, "name"),
    ],
    ids=["empty-name", "long-name", "int-name", "negative-price", "price-over-max",
         "float-price", "string-price", "negative-stock", "stock-over-max", "bool-stock",
         "long-description", "unknown-field", "null-name"],
)
def test_invalid_product_is_400_naming_the_field(api, admin, change, field):
    # Given a product body that is wrong in one way
    body = {"name": "ok", "price": 100, "stock": 1} | change
    # When an admin creates it
    reply = api.post("/admin/products", body, token=admin)
    # Then it is refused, naming the field
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]


def test_missing_product_fields_are_all_named(api, admin):
    # Given an empty body
    # When an admin creates a product with it
    reply = api.post("/admin/products", {}, token=admin)
    # Then every required field is named
    assert reply.status == 400, reply
    assert {"name", "price", "stock"} <= set(reply.body["error"]["fields"])


def test_creating_a_product_needs_the_admin_role(api, token):
    # Given a user without the admin role
    # When they create a product
    reply = api.post("/admin/products", {"name": "x", "price": 1, "stock": 1}, token=token)
    # Then it is forbidden
    assert reply.status == 403, reply
    assert reply.code == "INVALID_PERMISSION"


def test_creating_a_product_needs_a_token(api):
    # Given no token
    # When creating a product
    reply = api.post("/admin/products", {"name": "x", "price": 1, "stock": 1})
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- catalog: reads --------------------------------------------------------------------


def test_get_product_returns_it_with_its_description_without_a_token(api, admin):
    # Given a product
    product = add_product(api, admin, price=2500, stock=7, description="a fine thing")
    # When anyone reads it (product reads need no token)
    reply = api.get(f"/products/{product['id']}")
    # Then it comes back whole
    assert reply.status == 200, reply
    assert reply.body == product


@pytest.mark.parametrize("product_id", ["999999999999", "abc", "0", "-1", "1.5",
                                        "99999999999999999999999"])
def test_get_unknown_product_is_404(api, product_id):
    # Given an id no product has (or not a number at all)
    # When reading it
    reply = api.get(f"/products/{product_id}")
    # Then it is not found
    assert reply.status == 404, reply
    assert reply.code == "PRODUCT_NOT_FOUND"


def test_list_products_pages_in_ascending_id_order(api, admin):
    # Given three new products
    mine = [add_product(api, admin) for _ in range(3)]
    # When walking the whole catalog two at a time, without a token
    items = walk(api, "/products", limit=2)
    # Then every item has the list shape, ids ascend without repeats, and ours are there
    assert all(set(i) == LISTED_PRODUCT_FIELDS for i in items)
    ids = [i["id"] for i in items]
    assert ids == sorted(set(ids))
    listed = {i["id"]: i for i in items}
    for product in mine:
        assert listed[product["id"]] == {k: product[k] for k in LISTED_PRODUCT_FIELDS}


def test_list_products_first_page_has_a_cursor_when_more_exist(api, admin):
    # Given at least two products
    add_product(api, admin)
    add_product(api, admin)
    # When asking for one
    reply = api.get("/products?limit=1")
    # Then one item comes with a cursor to the rest
    assert reply.status == 200, reply
    assert len(reply.body["items"]) == 1
    assert isinstance(reply.body["next_cursor"], str)
    second = api.get(f"/products?limit=1&cursor={reply.body['next_cursor']}")
    assert second.body["items"][0]["id"] > reply.body["items"][0]["id"]


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"),
    ("cursor=not-a-cursor", "cursor"),
])
def test_list_products_bad_paging_is_400(api, query, field):
    # Given a bad limit or cursor
    # When listing products
    reply = api.get(f"/products?{query}")
    # Then it is refused, naming the parameter
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]


def test_best_products_answers_a_list_of_at_most_five(api):
    # Given the scheduled aggregation (whatever it has counted so far)
    # When anyone asks for the best sellers
    reply = api.get("/products/best")
    # Then it is a list of at most five ranked products
    assert reply.status == 200, reply
    assert set(reply.body) == {"items"}
    items = reply.body["items"]
    assert isinstance(items, list) and len(items) <= 5
    for item in items:
        assert set(item) == {"id", "name", "price", "stock", "sales"}
    sales = [i["sales"] for i in items]
    assert sales == sorted(sales, reverse=True)


# -- cart ------------------------------------------------------------------------------


def test_a_new_users_cart_is_empty(api, token):
    # Given a new user
    # When reading the cart
    cart = cart_of(api, token)
    # Then it is empty
    assert cart == {"items": [], "total": 0}


def test_put_cart_item_adds_the_line_without_taking_stock(api, admin, token):
    # Given a product with 10 in stock
    product = add_product(api, admin, price=1200, stock=10)
    # When putting 3 in the cart
    cart = put_cart(api, token, product["id"], 3)
    # Then the cart holds the line and its total, and the stock is not taken yet
    assert cart == {"items": [{"product_id": product["id"], "name": product["name"],
                               "price": 1200, "quantity": 3}], "total": 3600}
    assert cart_of(api, token) == cart
    assert stock_of(api, product["id"]) == 10


def test_put_cart_item_sets_the_quantity_rather_than_adding(api, admin, token):
    # Given 3 of a product in the cart
    product = add_product(api, admin, price=100, stock=10)
    put_cart(api, token, product["id"], 3)
    # When putting 5 of it
    cart = put_cart(api, token, product["id"], 5)
    # Then the cart holds 5, not 8
    assert [i["quantity"] for i in cart["items"]] == [5]
    assert cart["total"] == 500


def test_cart_total_sums_every_line(api, admin, token):
    # Given two products
    a = add_product(api, admin, price=1000, stock=5)
    b = add_product(api, admin, price=250, stock=5)
    # When putting 2 of one and 4 of the other
    put_cart(api, token, a["id"], 2)
    cart = put_cart(api, token, b["id"], 4)
    # Then both lines are there and the total is their sum
    assert {(i["product_id"], i["quantity"]) for i in cart["items"]} == {(a["id"], 2),
                                                                         (b["id"], 4)}
    assert cart["total"] == 2 * 1000 + 4 * 250


def test_put_cart_item_up_to_the_stock_is_allowed(api, admin, token):
    # Given a product with 4 in stock
    product = add_product(api, admin, stock=4)
    # When putting exactly 4 in the cart
    cart = put_cart(api, token, product["id"], 4)
    # Then it is accepted
    assert cart["items"][0]["quantity"] == 4


def test_put_cart_item_over_the_stock_is_409_and_changes_nothing(api, admin, token):
    # Given a product with 4 in stock, 2 of which are in the cart
    product = add_product(api, admin, stock=4)
    before = put_cart(api, token, product["id"], 2)
    # When putting 5 of it
    reply = api.call("PUT", f"/cart/items/{product['id']}", {"quantity": 5}, token=token)
    # Then it is refused and the cart is unchanged
    assert reply.status == 409, reply
    assert reply.code == "OUT_OF_STOCK"
    assert cart_of(api, token) == before


@pytest.mark.parametrize("product_id", ["999999999999", "abc"])
def test_put_cart_item_of_an_unknown_product_is_404(api, token, product_id):
    # Given no such product
    # When putting it in the cart
    reply = api.call("PUT", f"/cart/items/{product_id}", {"quantity": 1}, token=token)
    # Then it is not found, and the cart stays empty
    assert reply.status == 404, reply
    assert reply.code == "PRODUCT_NOT_FOUND"
    assert cart_of(api, token)["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({"quantity": 0}, "quantity"), ({"quantity": 1001}, "quantity"),
     ({"quantity": "2"}, "quantity"), ({"quantity": 1.5}, "quantity"), ({}, "quantity"),
     ({"quantity": 1, "price": 1}, "price")],
    ids=["zero", "over-max", "string", "float", "missing", "unknown-field"],
)
def test_put_cart_item_with_a_bad_quantity_is_400(api, admin, token, body, field):
    # Given a product
    product = add_product(api, admin, stock=2000)
    # When putting it in the cart with a bad body
    reply = api.call("PUT", f"/cart/items/{product['id']}", body, token=token)
    # Then it is refused, naming the field
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]


def test_carts_are_per_user(api, admin, token, other):
    # Given a user with something in the cart
    product = add_product(api, admin)
    put_cart(api, token, product["id"], 1)
    # When another user reads their cart
    # Then it is empty
    assert cart_of(api, other) == {"items": [], "total": 0}


def test_delete_cart_item_with_quantity_reduces_the_line(api, admin, token):
    # Given 5 of a product in the cart
    product = add_product(api, admin, price=100)
    put_cart(api, token, product["id"], 5)
    # When taking 2 out
    reply = api.call("DELETE", f"/cart/items/{product['id']}?quantity=2", token=token)
    # Then 3 are left
    assert reply.status == 200, reply
    assert [i["quantity"] for i in reply.body["items"]] == [3]
    assert reply.body["total"] == 300
    assert cart_of(api, token) == reply.body


def test_delete_cart_item_without_quantity_removes_the_line(api, admin, token):
    # Given two products in the cart
    a = add_product(api, admin, price=100)
    b = add_product(api, admin, price=7)
    put_cart(api, token, a["id"], 5)
    put_cart(api, token, b["id"], 1)
    # When deleting one without a quantity
    reply = api.call("DELETE", f"/cart/items/{a['id']}", token=token)
    # Then its whole line is gone and the other stays
    assert reply.status == 200, reply
    assert [(i["product_id"], i["quantity"]) for i in reply.body["items"]] == [(b["id"], 1)]
    assert reply.body["total"] == 7


def test_delete_cart_item_of_its_whole_quantity_removes_the_line(api, admin, token):
    # Given 2 of a product in the cart
    product = add_product(api, admin)
    put_cart(api, token, product["id"], 2)
    # When taking 2 out
    reply = api.call("DELETE", f"/cart/items/{product['id']}?quantity=2", token=token)
    # Then the cart is empty
    assert reply.status == 200, reply
    assert reply.body == {"items": [], "total": 0}


@pytest.mark.parametrize("known", ["product", "unknown", "abc"],
                         ids=["known-product", "unknown-product", "non-numeric-id"])
def test_delete_cart_item_not_in_the_cart_is_404(api, admin, token, known):
    # Given a product that is not in the cart (or not in the catalog, or not even an id)
    product_id = {"product": lambda: add_product(api, admin)["id"],
                  "unknown": lambda: 999_999_999_999, "abc": lambda: "abc"}[known]()
    # When deleting it from the cart
    reply = api.call("DELETE", f"/cart/items/{product_id}", token=token)
    # Then it is not found
    assert reply.status == 404, reply
    assert reply.code == "CART_ITEM_NOT_FOUND"


def test_delete_more_than_the_cart_holds_is_409_and_changes_nothing(api, admin, token):
    # Given 2 of a product in the cart
    product = add_product(api, admin)
    before = put_cart(api, token, product["id"], 2)
    # When taking 3 out
    reply = api.call("DELETE", f"/cart/items/{product['id']}?quantity=3", token=token)
    # Then it is refused and the cart is unchanged
    assert reply.status == 409, reply
    assert reply.code == "INSUFFICIENT_CART_QUANTITY"
    assert cart_of(api, token) == before


@pytest.mark.parametrize("quantity", ["0", "-1", "abc", "1.5", ""])
def test_delete_cart_item_with_a_bad_quantity_is_400(api, admin, token, quantity):
    # Given 2 of a product in the cart
    product = add_product(api, admin)
    before = put_cart(api, token, product["id"], 2)
    # When deleting with a bad quantity
    reply = api.call("DELETE", f"/cart/items/{product['id']}?quantity={quantity}", token=token)
    # Then it is refused, naming the parameter, and the cart is unchanged
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert "quantity" in reply.body["error"]["fields"]
    assert cart_of(api, token) == before


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/cart", None),
    ("PUT", "/cart/items/1", {"quantity": 1}),
    ("DELETE", "/cart/items/1", None),
])
def test_cart_endpoints_need_a_token(api, method, path, body):
    # Given no token
    # When using the cart
    reply = api.call(method, path, body)
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- orders: POST /orders --------------------------------------------------------------


def test_create_order_is_202_with_an_orders_create_job(api, admin, token):
    # Given a product
    product = add_product(api, admin)
    # When ordering it without waiting
    reply = api.post("/orders", {"items": [{"product_id": product["id"], "quantity": 1}]},
                     token=token)
    # Then the command is accepted as an orders.create job
    assert reply.status == 202, reply
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.headers["retry-after"] == "1"
    assert reply.body["type"] == "orders.create"
    assert reply.body["status"] == "queued"
    assert succeeded(api.wait_job(reply.body["id"], token))["status"] == "NOT_PAID"


def test_an_order_takes_the_stock_at_once_and_is_not_paid(api, admin, token):
    # Given two products with 10 and 5 in stock
    a = add_product(api, admin, price=1500, stock=10)
    b = add_product(api, admin, price=300, stock=5)
    started = now()
    # When ordering 3 of one and 5 of the other
    result = succeeded(order_lines(api, token, (a["id"], 3), (b["id"], 5)))
    # Then a NOT_PAID order records the total, expires in 5 minutes, and the stock is taken
    assert set(result) == ORDER_RESULT_FIELDS
    assert result["status"] == "NOT_PAID"
    assert result["total"] == 3 * 1500 + 5 * 300
    assert result["discount"] == 0
    assert result["pay_amount"] == result["total"]
    expires = parse_time(result["expires_at"])
    assert started + timedelta(minutes=4) < expires < now() + timedelta(minutes=6)
    assert stock_of(api, a["id"]) == 7
    assert stock_of(api, b["id"]) == 0


def test_an_order_from_the_cart_takes_its_lines_and_empties_it(api, admin, token):
    # Given a cart with two products
    a = add_product(api, admin, price=200, stock=10)
    b = add_product(api, admin, price=50, stock=10)
    put_cart(api, token, a["id"], 2)
    put_cart(api, token, b["id"], 3)
    # When ordering from the cart
    result = succeeded(order(api, token, {"from_cart": True}))
    # Then the order holds the cart's lines, the stock is taken and the cart is empty
    assert result["total"] == 2 * 200 + 3 * 50
    lines = get_order(api, token, result["order_id"])["items"]
    assert {(i["product_id"], i["quantity"], i["unit_price"]) for i in lines} == {
        (a["id"], 2, 200), (b["id"], 3, 50)}
    assert (stock_of(api, a["id"]), stock_of(api, b["id"])) == (8, 7)
    assert cart_of(api, token) == {"items": [], "total": 0}


def _lines(n: int) -> list[dict]:
    return [{"product_id": i + 1, "quantity": 1} for i in range(n)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"product_id": 1, "quantity": 1}], "from_cart": True}, "items"),
        ({}, "items"),
        ({"from_cart": False}, "items"),
        ({"items": []}, "items"),
        ({"items": _lines(51)}, "items"),
        ({"items": "1"}, "items"),
        ({"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]},
         "items"),
        ({"items": [{"product_id": 1, "quantity": 0}]}, "items[0].quantity"),
        ({"items": [{"product_id": 1, "quantity": 1},
                    {"product_id": 2, "quantity": 1001}]}, "items[1].quantity"),
        ({"items": [{"product_id": "1", "quantity": 1}]}, "items[0].product_id"),
        ({"items": [{"product_id": 1.0, "quantity": 1}]}, "items[0].product_id"),
        ({"items": [{"quantity": 1}]}, "items[0].product_id"),
        ({"items": [{"product_id": 1, "quantity": 1, "price": 1}]}, "items[0].price"),
        ({"items": [5]}, "items[0]"),
        ({"from_cart": "yes"}, "from_cart"),
        ({"from_cart": True, "user_coupon_id": "1"}, "user_coupon_id"),
        ({"from_cart": True, "user_id": 1}, "user_id"),
    ],
    ids=["items-and-from-cart", "neither", "from-cart-false", "empty-items", "51-lines",
         "items-not-a-list", "duplicate-product", "quantity-0", "quantity-1001",
         "string-product-id", "float-product-id", "missing-product-id", "unknown-line-field",
         "line-not-an-object", "from-cart-string", "string-coupon-id", "unknown-field"],
)
def test_invalid_order_is_400_naming_the_field_and_records_no_job(api, token, body, field):
    # Given an order body that is wrong in one way
    # When ordering
    reply = api.post("/orders", body, token=token)
    # Then it is refused synchronously, naming the field, and no job is recorded
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    fields = reply.body["error"]["fields"]
    assert field in fields or any(k.startswith(f"{field}.") for k in fields), fields
    assert api.get("/jobs", token=token).body["items"] == []


def test_an_order_of_50_lines_is_accepted(api, admin, token):
    # Given 50 products
    products = [add_product(api, admin, price=1, stock=1) for _ in range(50)]
    # When ordering one of each
    result = succeeded(order_lines(api, token, *[(p["id"], 1) for p in products]))
    # Then the order has 50 lines
    assert result["total"] == 50
    assert len(get_order(api, token, result["order_id"])["items"]) == 50


def test_ordering_an_unknown_product_fails_and_takes_nothing(api, admin, token):
    # Given one real product and one id no product has
    product = add_product(api, admin, stock=5)
    # When ordering both
    job = order_lines(api, token, (product["id"], 2), (999_999_999_999, 1))
    # Then the job fails, the real product's stock is untouched and there is no order
    assert_failed(job, "PRODUCT_NOT_FOUND")
    assert stock_of(api, product["id"]) == 5
    assert api.get("/orders", token=token).body["items"] == []


def test_ordering_more_than_the_stock_fails_and_takes_nothing(api, admin, token):
    # Given two products, the second with only 2 in stock
    a = add_product(api, admin, stock=10)
    b = add_product(api, admin, stock=2)
    # When ordering 4 of the first and 3 of the second
    job = order_lines(api, token, (a["id"], 4), (b["id"], 3))
    # Then the job fails and neither stock moved, and there is no order
    assert_failed(job, "OUT_OF_STOCK")
    assert (stock_of(api, a["id"]), stock_of(api, b["id"])) == (10, 2)
    assert api.get("/orders", token=token).body["items"] == []


def test_ordering_from_an_empty_cart_fails(api, token):
    # Given an empty cart
    # When ordering from it
    job = order(api, token, {"from_cart": True})
    # Then the job fails
    assert_failed(job, "CART_EMPTY")


def test_a_failed_order_from_the_cart_leaves_the_cart_alone(api, admin, token, other):
    # Given a cart holding 3 of a product, of which someone else then buys 2
    product = add_product(api, admin, stock=3)
    before = put_cart(api, token, product["id"], 3)
    succeeded(order_lines(api, other, (product["id"], 2)))
    # When ordering from the cart
    job = order(api, token, {"from_cart": True})
    # Then it fails; the cart and the remaining stock are unchanged
    assert_failed(job, "OUT_OF_STOCK")
    assert cart_of(api, token) == before
    assert stock_of(api, product["id"]) == 1


def test_creating_an_order_needs_a_token(api):
    # Given no token
    # When ordering
    reply = api.post("/orders", {"from_cart": True})
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- orders: reads ---------------------------------------------------------------------


def test_get_order_returns_it_with_its_items(api, admin, token):
    # Given an order of 2 of a product
    product = add_product(api, admin, price=450)
    result = succeeded(order_lines(api, token, (product["id"], 2)))
    # When reading it
    body = get_order(api, token, result["order_id"])
    # Then it carries its status, amounts and lines
    assert body["id"] == result["order_id"]
    assert body["status"] == "NOT_PAID"
    assert (body["total"], body["discount"], body["pay_amount"]) == (900, 0, 900)
    assert body["expires_at"] == result["expires_at"]
    assert body["items"] == [{"product_id": product["id"], "quantity": 2, "unit_price": 450}]


def test_list_orders_is_newest_first_with_items_and_pages(api, admin, token):
    # Given three orders
    product = add_product(api, admin, price=10)
    ids = [succeeded(order_lines(api, token, (product["id"], n)))["order_id"]
           for n in (1, 2, 3)]
    # When listing them two at a time
    first = api.get("/orders?limit=2", token=token)
    assert first.status == 200, first
    second = api.get(f"/orders?limit=2&cursor={first.body['next_cursor']}", token=token)
    # Then they come newest first, each with its items, and the pages end
    listed = first.body["items"] + second.body["items"]
    assert [o["id"] for o in listed] == ids[::-1]
    assert [o["items"][0]["quantity"] for o in listed] == [3, 2, 1]
    assert all(o["status"] == "NOT_PAID" for o in listed)
    assert second.body["next_cursor"] is None


def test_orders_are_private_to_their_owner(api, admin, token, other):
    # Given an order of one user
    product = add_product(api, admin)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    # When another user reads or lists orders
    reply = api.get(f"/orders/{order_id}", token=other)
    # Then they do not see it
    assert reply.status == 404, reply
    assert reply.code == "ORDER_NOT_FOUND"
    assert api.get("/orders", token=other).body["items"] == []


def test_concurrent_orders_never_sell_more_than_the_stock(api, admin):
    # Given a product with 3 in stock and 6 users who each want one
    product = add_product(api, admin, stock=3)
    tokens = [api.signup_login(new_name()) for _ in range(6)]
    # When they all order at once
    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda t: order_lines(api, t, (product["id"], 1)), tokens))
    # Then exactly 3 orders are made, the rest are out of stock, and the stock is 0
    outcomes = sorted(j["status"] if j["status"] == "succeeded" else j["error"]["code"]
                      for j in jobs)
    assert outcomes == ["OUT_OF_STOCK"] * 3 + ["succeeded"] * 3
    assert stock_of(api, product["id"]) == 0


@pytest.mark.parametrize("path", ["/orders", "/users/me/coupons"])
@pytest.mark.parametrize("query", ["limit=0", "limit=101", "cursor=not-a-cursor"])
def test_user_lists_refuse_bad_paging(api, token, path, query):
    # Given a bad limit or cursor
    # When listing one's orders or coupons
    reply = api.get(f"{path}?{query}", token=token)
    # Then it is refused
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"


@pytest.mark.parametrize("order_id", ["999999999999", "abc", "0"])
def test_get_unknown_order_is_404(api, token, order_id):
    # Given no such order
    # When reading it
    reply = api.get(f"/orders/{order_id}", token=token)
    # Then it is not found
    assert reply.status == 404, reply
    assert reply.code == "ORDER_NOT_FOUND"


@pytest.mark.parametrize("path", ["/orders", "/orders/1"])
def test_reading_orders_needs_a_token(api, path):
    # Given no token
    # When reading orders
    reply = api.get(path)
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- payment ---------------------------------------------------------------------------


def test_paying_an_order_spends_points_and_marks_it_paid(api, admin, token):
    # Given a user with 10,000 points and an order of 3,500
    charge(api, token, 10_000)
    product = add_product(api, admin, price=3500)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    # When paying it without waiting
    reply = api.post(f"/orders/{order_id}/payment", token=token)
    assert reply.status == 202, reply
    assert reply.body["type"] == "orders.pay"
    job = api.wait_job(reply.body["id"], token)
    # Then it is PAID and the points are spent
    assert succeeded(job) == {"order_id": order_id, "status": "PAID", "balance": 6500}
    assert balance(api, token) == 6500
    body = get_order(api, token, order_id)
    assert body["status"] == "PAID"
    parse_time(body["paid_at"])
    assert stock_of(api, product["id"]) == 9


def test_paying_twice_fails_and_spends_once(api, admin, token):
    # Given a paid order
    charge(api, token, 1000)
    product = add_product(api, admin, price=400)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    succeeded(pay(api, token, order_id))
    # When paying it again
    job = pay(api, token, order_id)
    # Then it fails and the balance is spent only once
    assert_failed(job, "ORDER_ALREADY_PAID")
    assert balance(api, token) == 600


def test_paying_without_enough_points_fails_and_changes_nothing(api, admin, token):
    # Given a user with 999 points and an order of 1,000
    charge(api, token, 999)
    product = add_product(api, admin, price=1000, stock=3)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    # When paying it
    job = pay(api, token, order_id)
    # Then it fails; the order stays NOT_PAID, the balance and the stock are unchanged
    assert_failed(job, "INSUFFICIENT_POINTS")
    assert balance(api, token) == 999
    assert get_order(api, token, order_id)["status"] == "NOT_PAID"
    assert stock_of(api, product["id"]) == 2


def test_paying_another_users_order_fails_as_not_found(api, admin, token, other):
    # Given an order of one user, and another user with plenty of points
    product = add_product(api, admin, price=100)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    charge(api, other, 1000)
    # When the other user pays it
    job = pay(api, other, order_id)
    # Then it fails as not found; nothing is spent and the order is still NOT_PAID
    assert_failed(job, "ORDER_NOT_FOUND")
    assert balance(api, other) == 1000
    assert get_order(api, token, order_id)["status"] == "NOT_PAID"


def test_paying_an_unknown_order_fails_as_not_found(api, token):
    # Given no such order
    # When paying it
    job = pay(api, token, 999_999_999_999)
    # Then the job fails as not found
    assert_failed(job, "ORDER_NOT_FOUND")


@pytest.mark.parametrize("order_id", ["abc", "0", "1.5"])
def test_paying_a_non_numeric_order_id_is_404(api, token, order_id):
    # Given an order id that cannot be one
    # When paying it
    reply = api.post(f"/orders/{order_id}/payment", token=token)
    # Then it is refused synchronously and no job is recorded
    assert reply.status == 404, reply
    assert reply.code == "ORDER_NOT_FOUND"
    assert api.get("/jobs", token=token).body["items"] == []


def test_paying_an_expired_order_fails_and_changes_nothing(api, admin, token, database):
    # Given an order whose payment deadline has passed
    charge(api, token, 1000)
    product = add_product(api, admin, price=100)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    with database.connection_context():
        Order.update(expires_at=datetime(2000, 1, 1)).where(Order.id == order_id).execute()
    # When paying it
    job = pay(api, token, order_id)
    # Then it fails as expired and no points are spent
    assert_failed(job, "ORDER_EXPIRED")
    assert balance(api, token) == 1000
    assert get_order(api, token, order_id)["status"] != "PAID"


def test_payment_with_a_body_is_400(api, admin, token):
    # Given an order
    product = add_product(api, admin)
    order_id = succeeded(order_lines(api, token, (product["id"], 1)))["order_id"]
    # When paying with fields in the body
    reply = api.post(f"/orders/{order_id}/payment", {"amount": 1}, token=token)
    # Then it is refused, naming the field
    assert reply.status == 400, reply
    assert "amount" in reply.body["error"]["fields"]


def test_paying_needs_a_token(api):
    # Given no token
    # When paying
    reply = api.post("/orders/1/payment")
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- coupons: POST /admin/coupons, GET /coupons ----------------------------------------


def test_admin_creates_a_coupon_201_with_times_in_utc(api, admin):
    # Given a coupon body whose times carry a +09:00 offset
    body = coupon_body(discount_type="PERCENT", discount_value=15, stock=3,
                       starts_at="2024-01-01T09:00:00+09:00",
                       ends_at="2099-01-01T09:00:00+09:00")
    # When an admin creates it
    reply = api.post("/admin/coupons", body, token=admin)
    # Then it is created with all its stock remaining and its times in UTC
    assert reply.status == 201, reply
    coupon = reply.body
    assert set(coupon) == COUPON_FIELDS
    assert (coupon["name"], coupon["discount_type"], coupon["discount_value"]) == (
        body["name"], "PERCENT", 15)
    assert coupon["remaining"] == 3
    assert parse_time(coupon["starts_at"]) == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_time(coupon["ends_at"]) == datetime(2099, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("change", [
    {"discount_type": "PERCENT", "discount_value": 100},
    {"discount_type": "PERCENT", "discount_value": 1},
    {"discount_type": "FIXED", "discount_value": 1_000_000},
    {"stock": 0},
    {"starts_at": "2024-01-01T00:00:00Z", "ends_at": "2024-01-01T00:00:01Z"},
], ids=["percent-100", "percent-1", "big-fixed", "no-stock", "z-suffix"])
def test_coupon_bounds_are_accepted(api, admin, change):
    # Given a coupon body at an edge of what is allowed
    # When an admin creates it
    reply = api.post("/admin/coupons", coupon_body(**change), token=admin)
    # Then it is created
    assert reply.status == 201, reply


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"discount_type": "BOGUS"}, "discount_type"),
        ({"discount_type": "fixed"}, "discount_type"),
        ({"discount_type": "PERCENT", "discount_value": 101}, "discount_value"),
        ({"discount_value": 0}, "discount_value"),
        ({"discount_value": "5"}, "discount_value"),
        ({"stock": -1}, "stock"),
        ({"name": ""}, "name"),
        ({"starts_at": "2030-01-02T00:00:00+00:00", "ends_at": "2030-01-01T00:00:00+00:00"},
         "ends_at"),
        ({"starts_at": "2030-01-01T00:00:00+00:00", "ends_at": "2030-01-01T00:00:00+00:00"},
         "ends_at"),
        ({"starts_at": "2030-01-01T00:00:00"}, "starts_at"),
        ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"),
        ({"ends_at": "tomorrow"}, "ends_at"),
        ({"starts_at": 1700000000}, "starts_at"),
        ({"issued": 0}, "issued"),
    ],
    ids=["unknown-type", "lowercase-type", "percent-over-100", "zero-value", "string-value",
         "negative-stock", "empty-name", "ends-before-starts", "ends-at-starts",
         "starts-without-offset", "ends-without-offset", "not-a-time", "number-time",
         "unknown-field"],
)
def test_invalid_coupon_is_400_naming_the_field(api, admin, change, field):
    # Given a coupon body that is wrong in one way
    # When an admin creates it
    reply = api.post("/admin/coupons", coupon_body(**change), token=admin)
    # Then it is refused, naming the field
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]


def test_creating_a_coupon_needs_the_admin_role(api, token):
    # Given a user without the admin role
    # When they create a coupon
    reply = api.post("/admin/coupons", coupon_body(), token=token)
    # Then it is forbidden
    assert reply.status == 403, reply
    assert reply.code == "INVALID_PERMISSION"


def test_creating_a_coupon_needs_a_token(api):
    # Given no token
    # When creating a coupon
    reply = api.post("/admin/coupons", coupon_body())
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


def test_list_coupons_shows_the_remaining_count(api, admin, token, other):
    # Given a coupon of 5, one of which has been issued
    coupon = add_coupon(api, admin, stock=5)
    succeeded(issue(api, other, coupon["id"]))
    # When listing coupons
    items = walk(api, "/coupons", token)
    # Then the coupon is listed with 4 remaining
    [listed] = [c for c in items if c["id"] == coupon["id"]]
    assert listed == coupon | {"remaining": 4}
    assert all(set(c) == COUPON_FIELDS for c in items)


def test_list_coupons_needs_a_token(api):
    # Given no token (the contract only exempts product/concert/artwork/post reads)
    # When listing coupons
    reply = api.get("/coupons")
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- coupons: issue and my coupons -----------------------------------------------------


def test_issuing_a_coupon_is_a_coupons_issue_job_that_gives_the_user_one(api, admin, token):
    # Given a coupon
    coupon = add_coupon(api, admin, discount_value=700, stock=2)
    # When a user asks for it without waiting
    reply = api.post(f"/coupons/{coupon['id']}/issue", token=token)
    assert reply.status == 202, reply
    assert reply.body["type"] == "coupons.issue"
    result = succeeded(api.wait_job(reply.body["id"], token))
    # Then they hold one until the coupon ends, and it is no longer remaining
    assert set(result) == {"user_coupon_id", "coupon_id", "expires_at"}
    assert result["coupon_id"] == coupon["id"]
    assert parse_time(result["expires_at"]) == parse_time(coupon["ends_at"])
    mine = my_coupon(api, token, result["user_coupon_id"])
    assert mine == {"user_coupon_id": result["user_coupon_id"], "coupon_id": coupon["id"],
                    "name": coupon["name"], "discount_type": "FIXED", "discount_value": 700,
                    "used": False, "expires_at": result["expires_at"]}
    [listed] = [c for c in walk(api, "/coupons", token) if c["id"] == coupon["id"]]
    assert listed["remaining"] == 1


def test_my_coupons_lists_only_mine_newest_first(api, admin, token, other):
    # Given a user holding two coupons, and another user holding a third
    first = issued_coupon(api, admin, token)
    second = issued_coupon(api, admin, token)
    issued_coupon(api, admin, other)
    # When the user lists their coupons
    reply = api.get("/users/me/coupons", token=token)
    # Then they see exactly their two, newest first
    assert reply.status == 200, reply
    assert [c["user_coupon_id"] for c in reply.body["items"]] == [second, first]
    assert all(set(c) == MY_COUPON_FIELDS for c in reply.body["items"])


@pytest.mark.parametrize("coupon_id", ["999999999999", "abc"])
def test_issuing_an_unknown_coupon_is_404_at_once(api, token, coupon_id):
    # Given no such coupon
    # When asking for it
    reply = api.post(f"/coupons/{coupon_id}/issue", token=token)
    # Then it is refused synchronously and no job is recorded
    assert reply.status == 404, reply
    assert reply.code == "COUPON_NOT_FOUND"
    assert api.get("/jobs", token=token).body["items"] == []


def test_a_sold_out_coupon_is_refused(api, admin, token, other):
    # Given a coupon of 1 that one user already has
    coupon = add_coupon(api, admin, stock=1)
    succeeded(issue(api, other, coupon["id"]))
    # When a second user asks for it
    job = issue(api, token, coupon["id"])
    # Then it is sold out and they hold none
    assert_failed(job, "COUPON_SOLD_OUT")
    assert api.get("/users/me/coupons", token=token).body["items"] == []


def test_concurrent_requests_never_issue_more_than_the_stock(api, admin):
    # Given a coupon of 2 and 6 users who each want one
    coupon = add_coupon(api, admin, stock=2)
    tokens = [api.signup_login(new_name()) for _ in range(6)]
    # When they all ask at once
    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda t: issue(api, t, coupon["id"]), tokens))
    # Then exactly 2 are issued, the rest are sold out, and none remain
    outcomes = sorted(j["status"] if j["status"] == "succeeded" else j["error"]["code"]
                      for j in jobs)
    assert outcomes == ["COUPON_SOLD_OUT"] * 4 + ["succeeded"] * 2
    [listed] = [c for c in walk(api, "/coupons", tokens[0]) if c["id"] == coupon["id"]]
    assert listed["remaining"] == 0


def test_concurrent_requests_of_one_user_issue_one_coupon(api, admin, token):
    # Given a coupon of 5
    coupon = add_coupon(api, admin, stock=5)
    # When one user asks for it 4 times at once
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: issue(api, token, coupon["id"]), range(4)))
    # Then they get exactly one, the others are already issued, and 4 remain
    outcomes = sorted(j["status"] if j["status"] == "succeeded" else j["error"]["code"]
                      for j in jobs)
    assert outcomes == ["COUPON_ALREADY_ISSUED"] * 3 + ["succeeded"]
    assert len(api.get("/users/me/coupons", token=token).body["items"]) == 1
    [listed] = [c for c in walk(api, "/coupons", token) if c["id"] == coupon["id"]]
    assert listed["remaining"] == 4


def test_a_coupon_without_stock_is_sold_out_for_the_first_user(api, admin, token):
    # Given a coupon of 0
    coupon = add_coupon(api, admin, stock=0)
    # When a user asks for it
    job = issue(api, token, coupon["id"])
    # Then it is sold out
    assert_failed(job, "COUPON_SOLD_OUT")


def test_a_coupon_is_issued_once_per_user(api, admin, token):
    # Given a user who already has a coupon (of 1, so the stock is spent too)
    coupon = add_coupon(api, admin, stock=1)
    user_coupon_id = succeeded(issue(api, token, coupon["id"]))["user_coupon_id"]
    # When they ask for it again
    job = issue(api, token, coupon["id"])
    # Then they are told they already have it, and still hold exactly one
    assert_failed(job, "COUPON_ALREADY_ISSUED")
    held = api.get("/users/me/coupons", token=token).body["items"]
    assert [c["user_coupon_id"] for c in held] == [user_coupon_id]


@pytest.mark.parametrize(("starts", "ends"), [
    (timedelta(days=1), timedelta(days=2)),
    (timedelta(days=-2), timedelta(days=-1)),
], ids=["not-started", "ended"])
def test_a_coupon_outside_its_window_is_not_issued(api, admin, token, starts, ends):
    # Given a coupon whose window is in the future (or the past)
    coupon = add_coupon(api, admin, starts_at=(now() + starts).isoformat(),
                        ends_at=(now() + ends).isoformat())
    # When a user asks for it
    job = issue(api, token, coupon["id"])
    # Then it is not active, and none of its stock is spent
    assert_failed(job, "COUPON_NOT_ACTIVE")
    [listed] = [c for c in walk(api, "/coupons", token) if c["id"] == coupon["id"]]
    assert listed["remaining"] == coupon["remaining"]


def test_issuing_with_a_body_is_400(api, admin, token):
    # Given a coupon
    coupon = add_coupon(api, admin)
    # When asking for it with fields in the body
    reply = api.post(f"/coupons/{coupon['id']}/issue", {"user_id": 1}, token=token)
    # Then it is refused, naming the field
    assert reply.status == 400, reply
    assert "user_id" in reply.body["error"]["fields"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/coupons/1/issue"), ("GET", "/users/me/coupons"),
])
def test_coupon_endpoints_of_a_user_need_a_token(api, method, path):
    # Given no token
    # When asking for a coupon or listing one's coupons
    reply = api.call(method, path)
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


# -- orders with coupons ---------------------------------------------------------------


def test_a_fixed_coupon_takes_its_value_off_the_total(api, admin, token):
    # Given a user holding a 500 FIXED coupon, and a product of 1,500
    user_coupon_id = issued_coupon(api, admin, token, discount_type="FIXED",
                                   discount_value=500)
    product = add_product(api, admin, price=1500)
    # When ordering 2 with the coupon
    result = succeeded(order_lines(api, token, (product["id"], 2), coupon=user_coupon_id))
    # Then 500 is taken off the total of 3,000, and the order holds the coupon
    assert (result["total"], result["discount"], result["pay_amount"]) == (3000, 500, 2500)
    body = get_order(api, token, result["order_id"])
    assert body["user_coupon_id"] == user_coupon_id
    assert (body["discount"], body["pay_amount"]) == (500, 2500)


def test_a_percent_coupon_takes_its_share_rounded_down(api, admin, token):
    # Given a user holding a 15% coupon, and a product of 1,999
    user_coupon_id = issued_coupon(api, admin, token, discount_type="PERCENT",
                                   discount_value=15)
    product = add_product(api, admin, price=1999)
    # When ordering 1 with the coupon
    result = succeeded(order_lines(api, token, (product["id"], 1), coupon=user_coupon_id))
    # Then the discount is 1999 * 15 // 100
    assert (result["total"], result["discount"], result["pay_amount"]) == (1999, 299, 1700)


def test_a_fixed_coupon_bigger_than_the_total_makes_it_free(api, admin, token):
    # Given a user without points holding a 5,000 FIXED coupon, and a product of 1,200
    user_coupon_id = issued_coupon(api, admin, token, discount_value=5000)
    product = add_product(api, admin, price=1200)
    # When ordering it with the coupon and paying
    result = succeeded(order_lines(api, token, (product["id"], 1), coupon=user_coupon_id))
    paid = succeeded(pay(api, token, result["order_id"]))
    # Then the pay amount is 0 (never negative) and payment needs no points
    assert (result["total"], result["discount"], result["pay_amount"]) == (1200, 1200, 0)
    assert paid == {"order_id": result["order_id"], "status": "PAID", "balance": 0}
    assert my_coupon(api, token, user_coupon_id)["used"] is True


def test_paying_a_coupon_order_spends_the_pay_amount_and_uses_the_coupon(api, admin, token):
    # Given a user with 5,000 points and an order of 3,000 with a 1,000 FIXED coupon
    charge(api, token, 5000)
    user_coupon_id = issued_coupon(api, admin, token, discount_value=1000)
    product = add_product(api, admin, price=3000)
    order_id = succeeded(order_lines(api, token, (product["id"], 1),
                                     coupon=user_coupon_id))["order_id"]
    # When paying it
    paid = succeeded(pay(api, token, order_id))
    # Then only 2,000 is spent and the coupon shows as used
    assert paid["balance"] == 3000
    assert balance(api, token) == 3000
    assert my_coupon(api, token, user_coupon_id)["used"] is True


def test_a_used_coupon_cannot_be_used_again(api, admin, token):
    # Given a coupon used on a paid order
    charge(api, token, 10_000)
    user_coupon_id = issued_coupon(api, admin, token, discount_value=100)
    product = add_product(api, admin, price=1000, stock=5)
    order_id = succeeded(order_lines(api, token, (product["id"], 1),
                                     coupon=user_coupon_id))["order_id"]
    succeeded(pay(api, token, order_id))
    # When ordering again with it
    job = order_lines(api, token, (product["id"], 1), coupon=user_coupon_id)
    # Then it is refused as already used and no stock is taken
    assert_failed(job, "COUPON_ALREADY_USED")
    assert stock_of(api, product["id"]) == 4


def test_a_coupon_held_by_a_live_order_cannot_be_used_again(api, admin, token):
    # Given a coupon held by an unpaid order
    user_coupon_id = issued_coupon(api, admin, token)
    product = add_product(api, admin, price=1000, stock=5)
    succeeded(order_lines(api, token, (product["id"], 1), coupon=user_coupon_id))
    # When ordering again with it
    job = order_lines(api, token, (product["id"], 2), coupon=user_coupon_id)
    # Then it is refused as already used, no stock is taken and there is only one order
    assert_failed(job, "COUPON_ALREADY_USED")
    assert stock_of(api, product["id"]) == 4
    assert len(api.get("/orders", token=token).body["items"]) == 1
    assert my_coupon(api, token, user_coupon_id)["used"] is False


def test_another_users_coupon_is_not_found(api, admin, token, other):
    # Given a coupon held by another user
    theirs = issued_coupon(api, admin, other)
    product = add_product(api, admin, stock=5)
    # When ordering with it
    job = order_lines(api, token, (product["id"], 1), coupon=theirs)
    # Then it is not found and no stock is taken; the owner's coupon is untouched
    assert_failed(job, "COUPON_NOT_FOUND")
    assert stock_of(api, product["id"]) == 5
    assert my_coupon(api, other, theirs)["used"] is False


def test_an_unknown_coupon_is_not_found(api, admin, token):
    # Given a coupon id no one holds
    product = add_product(api, admin, stock=5)
    # When ordering with it
    job = order_lines(api, token, (product["id"], 1), coupon=999_999_999_999)
    # Then it is not found and no stock is taken
    assert_failed(job, "COUPON_NOT_FOUND")
    assert stock_of(api, product["id"]) == 5


def test_an_order_that_fails_leaves_its_coupon_free(api, admin, token):
    # Given a coupon, and an order with it that fails for lack of stock
    user_coupon_id = issued_coupon(api, admin, token, discount_value=100)
    product = add_product(api, admin, price=1000, stock=1)
    assert_failed(order_lines(api, token, (product["id"], 2), coupon=user_coupon_id),
                  "OUT_OF_STOCK")
    # When ordering what there is with the same coupon
    result = succeeded(order_lines(api, token, (product["id"], 1), coupon=user_coupon_id))
    # Then the coupon applies
    assert result["discount"] == 100


def test_an_order_from_the_cart_can_use_a_coupon(api, admin, token):
    # Given a cart of 2 x 800 and a 10% coupon
    user_coupon_id = issued_coupon(api, admin, token, discount_type="PERCENT",
                                   discount_value=10)
    product = add_product(api, admin, price=800)
    put_cart(api, token, product["id"], 2)
    # When ordering from the cart with the coupon
    result = succeeded(order(api, token, {"from_cart": True, "user_coupon_id": user_coupon_id}))
    # Then the discount applies to the cart's total
    assert (result["total"], result["discount"], result["pay_amount"]) == (1600, 160, 1440)


def test_a_missing_coupon_gate_is_read_from_the_database_once_for_a_burst():
    from types import SimpleNamespace

    from web.commands import DB
    from web.views import shop

    calls: list[int] = []

    async def db(fn, coupon_id):
        calls.append(coupon_id)
        await asyncio.sleep(0.01)
        return ("state", coupon_id)

    async def burst():
        read = shop.gate_state_once(SimpleNamespace(app={shop.GATE_READS: {}, DB: db}))
        first = await asyncio.gather(*(read(7) for _ in range(50)))
        return first, await read(7)  # (a later rebuild reads again)

    first, later = asyncio.run(burst())
    assert first == [("state", 7)] * 50 and later == ("state", 7)
    assert calls == [7, 7]
