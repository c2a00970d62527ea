"""Best sellers: units sold in paid orders per product and UTC day, top 5 of the last 3 days.

"The last 3 days" is today and the two days before it (UTC). Only PAID orders count, so
an expired order never does.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from peewee import fn

from db.connection import database
from db.models import Order, OrderItem, Product, ProductSalesDaily

WINDOW_DAYS = 3
TOP = 5


def window_start(now: datetime) -> date:
    """The first day counted."""
    return now.date() - timedelta(days=WINDOW_DAYS - 1)


def aggregate_sales(now: datetime) -> list[dict]:
    """Recount the window's daily sales from paid orders; the top ``(product_id, sales)``."""
    first = window_start(now)
    with database.atomic():  # the caller's transaction, or one of its own in a test
        ProductSalesDaily.delete().where(ProductSalesDaily.day >= first).execute()
        sold = (OrderItem
                .select(OrderItem.product, fn.DATE(Order.paid_at), fn.SUM(OrderItem.quantity))
                .join(Order)
                .where((Order.status == "PAID") & (Order.paid_at >= datetime.combine(first, time()))
                       & (Order.paid_at <= now))
                .group_by(OrderItem.product, fn.DATE(Order.paid_at)))
        ProductSalesDaily.insert_from(
            sold, [ProductSalesDaily.product, ProductSalesDaily.day, ProductSalesDaily.units]
        ).execute()
    return top_sellers(now)


def top_sellers(now: datetime) -> list[dict]:
    """``[{"product_id", "sales"}]``, best first, from the stored aggregate."""
    total = fn.SUM(ProductSalesDaily.units)
    rows = (ProductSalesDaily.select(ProductSalesDaily.product, total.alias("sales"))
            .where(ProductSalesDaily.day >= window_start(now))
            .group_by(ProductSalesDaily.product)
            .order_by(total.desc(), ProductSalesDaily.product)
            .limit(TOP).tuples())
    return [{"product_id": pid, "sales": int(sales)} for pid, sales in rows]


def with_products(ranking: list[dict]) -> list[dict]:
    """The ranking with each product's current name, price and stock."""
    products = {p.id: p for p in Product.select().where(
        Product.id.in_([r["product_id"] for r in ranking]))} if ranking else {}
    return [{"id": r["product_id"], "name": products[r["product_id"]].name,
             "price": products[r["product_id"]].price,
             "stock": products[r["product_id"]].stock, "sales": r["sales"]}
            for r in ranking if r["product_id"] in products]
