"""Orders: create (stock taken at once), pay with points, expire when unpaid.

Payment and expiry race on one conditional update of the order row
(``... WHERE status = 'NOT_PAID'``): exactly one of them wins.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from db.connection import database, execute, for_update, is_postgres
from db.models import CartItem, Coupon, Order, OrderItem, Product, UserCoupon
from jobs import points
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.pagination import id_page

Emit = Callable[..., None]

ORDER_TTL = timedelta(minutes=5)
NOT_PAID, PAID, EXPIRED = "NOT_PAID", "PAID", "EXPIRED"


def discount_for(discount_type: str, value: int, total: int) -> int:
    """The discount a coupon gives on ``total`` (never more than the total)."""
    raw = value if discount_type == "FIXED" else total * value // 100
    return max(0, min(total, raw))


def create_order(
    user_id: int,
    items: list[tuple[int, int]] | None,
    user_coupon_id: int | None,
    now: datetime,
) -> dict:
    """Inside a transaction: take stock and record a NOT_PAID order (``items=None``: the cart)."""
    from_cart = items is None
    if from_cart:
        items = [(c.product_id, c.quantity) for c in CartItem.select().where(
            CartItem.user == user_id)]
        if not items:
            raise DomainError("CART_EMPTY", "the cart is empty")
    items = sorted(items)  # lock product rows in one order everywhere: no deadlocks
    expires_at = now + ORDER_TTL
    if is_postgres() and len({pid for pid, _ in items}) == len(items):
        order_id, total = _create_in_one_statement(user_id, items, now, expires_at)
    else:
        order_id, total = _create_line_by_line(user_id, items, now, expires_at)
    discount = 0
    if user_coupon_id is not None:
        discount = _hold_coupon(user_id, user_coupon_id, order_id, total, now)
        execute("UPDATE orders SET discount = %s, pay_amount = %s, user_coupon_id = %s"
                " WHERE id = %s", (discount, total - discount, user_coupon_id, order_id))
    if from_cart:
        CartItem.delete().where(CartItem.user == user_id).execute()
    return {"order_id": order_id, "status": NOT_PAID, "total": total, "discount": discount,
            "pay_amount": total - discount, "expires_at": iso(expires_at)}


def _create_in_one_statement(user_id: int, items: list[tuple[int, int]], now: datetime,
                             expires_at: datetime) -> tuple[int, int]:
    """Take the stock of every line, record the order and its items: one round trip.

    The product rows are locked in id order first (``l``), as line by line would; if any
    line cannot be taken, no order is recorded, and the first such line (in id order)
    names the refusal (the caller's transaction undoes the lines that were taken).
    """
    rows = ", ".join(["(%s::bigint, %s::int)"] * len(items))  # (typed: it may be prepared)
    params = ([pid for pid, _ in items], *(v for line in items for v in line),
              user_id, NOT_PAID, now, expires_at, len(items))
    order_id, total, taken = execute(_CREATE.format(rows=rows), params, prepare=True).fetchone()
    if order_id is None:
        pid = next(pid for pid, _ in items if pid not in (taken or ()))
        if not execute("SELECT 1 FROM products WHERE id = %s", (pid,)).fetchone():
            raise DomainError("PRODUCT_NOT_FOUND", f"no product {pid}")
        raise DomainError("OUT_OF_STOCK", f"not enough of product {pid}")
    return order_id, total


def _create_line_by_line(user_id: int, items: list[tuple[int, int]], now: datetime,
                         expires_at: datetime) -> tuple[int, int]:
    """Take the stock line by line, then record the order and its items."""
    prices = {}
    for pid, quantity in items:
        row = execute(_TAKE_STOCK, (quantity, pid, quantity)).fetchone()
        if row is None:
            if not execute("SELECT 1 FROM products WHERE id = %s", (pid,)).fetchone():
                raise DomainError("PRODUCT_NOT_FOUND", f"no product {pid}")
            raise DomainError("OUT_OF_STOCK", f"not enough of product {pid}")
        prices[pid] = row[0]
    total = sum(prices[pid] * quantity for pid, quantity in items)
    order_id = execute(_NEW_ORDER, (user_id, NOT_PAID, total, total, now, expires_at)).fetchone()[0]
    values = ", ".join(["(%s, %s, %s, %s)"] * len(items))
    execute(f"INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES {values}",
            tuple(v for pid, quantity in items for v in (order_id, pid, quantity, prices[pid])))
    return order_id, total


# The per-order statements, written out: compiling them with peewee cost more CPU than
# the round trips they make.
_TAKE_STOCK = "UPDATE products SET stock = stock - %s WHERE id = %s AND stock >= %s RETURNING price"
_NEW_ORDER = ("INSERT INTO orders (user_id, status, total, discount, pay_amount, created_at,"
              " expires_at) VALUES (%s, %s, %s, 0, %s, %s, %s) RETURNING id")
_PAY = ("UPDATE orders SET status = 'PAID', paid_at = %s"
        " WHERE id = %s AND user_id = %s AND status = 'NOT_PAID' AND expires_at > %s"
        " RETURNING pay_amount, user_coupon_id, total, discount")
_ITEMS = "SELECT product_id, quantity, unit_price FROM order_items WHERE order_id = %s"
_CREATE = (  # the stock of every line, then the order and its items, if all were taken
    "WITH l AS (SELECT id FROM products WHERE id = ANY(%s) ORDER BY id FOR UPDATE),"
    " v (p, q) AS (VALUES {rows}),"
    " taken AS (UPDATE products SET stock = stock - v.q FROM v, l"
    "  WHERE products.id = v.p AND l.id = v.p AND products.stock >= v.q"
    "  RETURNING products.id, products.price, v.q),"
    " o AS (INSERT INTO orders (user_id, status, total, discount, pay_amount, created_at,"
    "  expires_at) SELECT %s, %s, t.total, 0, t.total, %s, %s"
    "  FROM (SELECT sum(price * q) AS total, count(*) AS n FROM taken) t WHERE t.n = %s"
    "  RETURNING id, total),"
    " i AS (INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
    "  SELECT o.id, taken.id, taken.q, taken.price FROM o, taken)"
    " SELECT o.id, o.total, (SELECT array_agg(id) FROM taken) FROM (SELECT) AS one"
    " LEFT JOIN o ON true"
)
_PAY_WITH_ITEMS = (  # one row per item of the order just paid (none if it was not)
    "WITH paid AS (" + _PAY.replace("RETURNING", "RETURNING id,") + ")"
    " SELECT p.pay_amount, p.user_coupon_id, p.total, p.discount, i.product_id, i.quantity,"
    " i.unit_price FROM paid p LEFT JOIN order_items i ON i.order_id = p.id ORDER BY i.id"
)


def _hold_coupon(user_id: int, user_coupon_id: int, order_id: int, total: int,
                 now: datetime) -> int:
    """Attach an owned, unused, unexpired coupon to the order; its discount."""
    held = (UserCoupon.select(UserCoupon, Coupon).join(Coupon)
            .where((UserCoupon.id == user_coupon_id) & (UserCoupon.user == user_id)).first())
    if held is None:
        raise DomainError("COUPON_NOT_FOUND", "no such coupon of yours")
    if held.used or held.order_id is not None:
        raise DomainError("COUPON_ALREADY_USED", "this coupon is used or held by an order")
    if now >= held.expires_at:
        raise DomainError("COUPON_EXPIRED", "this coupon has expired")
    attached = (UserCoupon.update(order_id=order_id)
                .where((UserCoupon.id == user_coupon_id) & ~UserCoupon.used
                       & UserCoupon.order_id.is_null()).execute())
    if not attached:
        raise DomainError("COUPON_ALREADY_USED", "this coupon is used or held by an order")
    return discount_for(held.coupon.discount_type, held.coupon.discount_value, total)


def pay_order(user_id: int, order_id: int, now: datetime, emit: Emit) -> dict:
    """Inside a transaction: spend points, mark PAID, use the coupon, emit ``order.paid``."""
    if is_postgres():  # paid, and its items read, in one round trip
        rows = execute(_PAY_WITH_ITEMS, (now, order_id, user_id, now), prepare=True).fetchall()
        won = rows[0][:4] if rows else None
        lines = [row[4:] for row in rows if row[4] is not None]
    else:
        won = execute(_PAY, (now, order_id, user_id, now)).fetchone()
        lines = None
    if won is None:
        order = Order.get_or_none((Order.id == order_id) & (Order.user == user_id))
        if order is None:
            raise DomainError("ORDER_NOT_FOUND", "no such order")
        if order.status == PAID:
            raise DomainError("ORDER_ALREADY_PAID", "this order is already paid")
        raise DomainError("ORDER_EXPIRED", "this order expired before it was paid")
    pay_amount, user_coupon_id, total, discount = won
    if pay_amount > 0:
        balance = points.spend(user_id, pay_amount, f"order:{order_id}", now)
    else:
        balance = points.balance(user_id)["balance"]
    if user_coupon_id is not None:
        UserCoupon.update(used=True).where(UserCoupon.id == user_coupon_id).execute()
    if lines is None:
        lines = execute(_ITEMS, (order_id,)).fetchall()
    items = [{"product_id": pid, "quantity": quantity, "unit_price": price}
             for pid, quantity, price in lines]
    emit("order.paid", {
        "order_id": order_id, "user_id": user_id, "items": items, "total": total,
        "discount": discount, "pay_amount": pay_amount, "paid_at": iso(now),
    })
    return {"order_id": order_id, "status": PAID, "balance": balance}


def expire_unpaid_orders(now: datetime, limit: int = 500) -> int:
    """Expire NOT_PAID orders past ``expires_at``: stock back, coupon free again; once each."""
    with database.atomic():
        # Rows a payment is holding are skipped: the payment decides; the next sweep sees.
        due = for_update(
            Order.select(Order.id).where((Order.status == NOT_PAID) & (Order.expires_at <= now))
            .order_by(Order.id).limit(limit),
            skip_locked=True,
        )
        expired = list(
            Order.update(status=EXPIRED, expired_at=now)
            .where(Order.id.in_(due) & (Order.status == NOT_PAID))
            .returning(Order.id, Order.user_coupon_id)
            .execute()
        )
        if not expired:
            return 0
        ids = [o.id for o in expired]
        returned: dict[int, int] = {}
        for item in OrderItem.select().where(OrderItem.order.in_(ids)):
            returned[item.product_id] = returned.get(item.product_id, 0) + item.quantity
        for pid in sorted(returned):
            Product.update(stock=Product.stock + returned[pid]).where(Product.id == pid).execute()
        for order in expired:
            if order.user_coupon_id is not None:
                (UserCoupon.update(order_id=None)
                 .where((UserCoupon.id == order.user_coupon_id)
                        & (UserCoupon.order_id == order.id)).execute())
    return len(expired)


def order_view(order: Order, items: list[OrderItem]) -> dict:
    """The API's order body."""
    return {
        "id": order.id, "status": order.status, "total": order.total,
        "discount": order.discount, "pay_amount": order.pay_amount,
        "user_coupon_id": order.user_coupon_id, "created_at": iso(order.created_at),
        "expires_at": iso(order.expires_at), "paid_at": iso(order.paid_at),
        "items": [{"product_id": i.product_id, "quantity": i.quantity,
                   "unit_price": i.unit_price} for i in items],
    }


def get_order(user_id: int, order_id: int) -> dict:
    """One of the user's orders with its items; ``ORDER_NOT_FOUND`` otherwise."""
    order = Order.get_or_none((Order.id == order_id) & (Order.user == user_id))
    if order is None:
        raise DomainError("ORDER_NOT_FOUND", "no such order")
    return order_view(order, list(OrderItem.select().where(OrderItem.order == order_id)))


def list_orders(user_id: int, limit: int, cursor: str | None) -> dict:
    """The user's orders, newest first, with items."""
    orders, next_cursor = id_page(Order.select().where(Order.user == user_id), Order.id, limit,
                                  cursor, newest_first=True)
    items: dict[int, list[OrderItem]] = {o.id: [] for o in orders}
    if orders:
        for item in OrderItem.select().where(OrderItem.order.in_(list(items))):
            items[item.order_id].append(item)
    return {"items": [order_view(o, items[o.id]) for o in orders], "next_cursor": next_cursor}
