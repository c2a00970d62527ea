"""The shop: products, carts, orders, coupons, best-seller aggregates, the outbox."""

from __future__ import annotations

import peewee

from db.models.base import BaseModel, JSONField
from db.models.users import User


class Product(BaseModel):
    """A product; ``stock`` never goes below zero (CHECK)."""

    id = peewee.BigAutoField()
    name = peewee.CharField(max_length=200)
    price = peewee.BigIntegerField(constraints=[peewee.Check("price >= 0")])
    stock = peewee.IntegerField(constraints=[peewee.Check("stock >= 0")])
    description = peewee.TextField(default="")
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "products"


class CartItem(BaseModel):
    """One product line in a user's cart."""

    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    product = peewee.ForeignKeyField(Product, on_delete="CASCADE")
    quantity = peewee.IntegerField(constraints=[peewee.Check("quantity > 0")])

    class Meta:
        table_name = "cart_items"
        primary_key = peewee.CompositeKey("user", "product")


class Coupon(BaseModel):
    """A first-come coupon: at most ``stock`` are ever issued (CHECK issued <= stock)."""

    id = peewee.BigAutoField()
    name = peewee.CharField(max_length=200)
    discount_type = peewee.CharField(max_length=8)
    discount_value = peewee.BigIntegerField(constraints=[peewee.Check("discount_value > 0")])
    stock = peewee.IntegerField(constraints=[peewee.Check("stock >= 0")])
    issued = peewee.IntegerField(default=0, constraints=[peewee.Check("issued >= 0")])
    starts_at = peewee.DateTimeField()
    ends_at = peewee.DateTimeField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "coupons"
        constraints = [peewee.SQL("CHECK (issued <= stock)")]


class UserCoupon(BaseModel):
    """A coupon issued to a user (one per user and coupon); held by at most one live order."""

    id = peewee.BigAutoField()
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    coupon = peewee.ForeignKeyField(Coupon, on_delete="CASCADE")
    used = peewee.BooleanField(default=False)
    order_id = peewee.BigIntegerField(null=True)
    expires_at = peewee.DateTimeField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "user_coupons"
        indexes = ((("user", "coupon"), True),)


class Order(BaseModel):
    """An order: NOT_PAID until paid (PAID) or swept after ``expires_at`` (EXPIRED)."""

    id = peewee.BigAutoField()
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    status = peewee.CharField(max_length=10)
    total = peewee.BigIntegerField()
    discount = peewee.BigIntegerField(default=0)
    pay_amount = peewee.BigIntegerField(constraints=[peewee.Check("pay_amount >= 0")])
    user_coupon_id = peewee.BigIntegerField(null=True)
    created_at = peewee.DateTimeField()
    expires_at = peewee.DateTimeField()
    paid_at = peewee.DateTimeField(null=True)
    expired_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "orders"
        indexes = ((("user", "id"), False), (("status", "expires_at"), False))


class OrderItem(BaseModel):
    """A product line of an order, at the price when it was ordered."""

    id = peewee.BigAutoField()
    order = peewee.ForeignKeyField(Order, on_delete="CASCADE", backref="items")
    product = peewee.ForeignKeyField(Product)
    quantity = peewee.IntegerField(constraints=[peewee.Check("quantity > 0")])
    unit_price = peewee.BigIntegerField()

    class Meta:
        table_name = "order_items"


class ProductSalesDaily(BaseModel):
    """Units sold in paid orders, per product and UTC day (the best-seller aggregate)."""

    product = peewee.ForeignKeyField(Product, on_delete="CASCADE")
    day = peewee.DateField()
    units = peewee.IntegerField()

    class Meta:
        table_name = "product_sales_daily"
        primary_key = peewee.CompositeKey("product", "day")


class OutboxEvent(BaseModel):
    """An event for the data platform, written in the transaction that caused it."""

    id = peewee.BigAutoField()
    topic = peewee.CharField(max_length=64)
    payload = JSONField()
    status = peewee.CharField(max_length=10, default="PENDING")
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField()
    last_error = peewee.TextField(null=True)
    created_at = peewee.DateTimeField()
    delivered_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "outbox_events"
        indexes = ((("status", "next_attempt_at"), False),)
