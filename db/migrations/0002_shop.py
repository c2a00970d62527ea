"""Shop: products, carts, coupons, orders, best-seller aggregates, the outbox.

The models below are a frozen copy of the schema at this migration.
"""

from peewee import (
    SQL,
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    Check,
    CompositeKey,
    DateField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = BigAutoField()

        class Meta:
            table_name = "users"

    class JSONField(TextField):
        pass


    class Product(Base):
        """A product; ``stock`` never goes below zero (CHECK)."""

        id = BigAutoField()
        name = CharField(max_length=200)
        price = BigIntegerField(constraints=[Check("price >= 0")])
        stock = IntegerField(constraints=[Check("stock >= 0")])
        description = TextField(default="")
        created_at = DateTimeField()

        class Meta:
            table_name = "products"


    class CartItem(Base):
        """One product line in a user's cart."""

        user = ForeignKeyField(User, on_delete="CASCADE")
        product = ForeignKeyField(Product, on_delete="CASCADE")
        quantity = IntegerField(constraints=[Check("quantity > 0")])

        class Meta:
            table_name = "cart_items"
            primary_key = CompositeKey("user", "product")


    class Coupon(Base):
        """A first-come coupon: at most ``stock`` are ever issued (CHECK issued <= stock)."""

        id = BigAutoField()
        name = CharField(max_length=200)
        discount_type = CharField(max_length=8)
        discount_value = BigIntegerField(constraints=[Check("discount_value > 0")])
        stock = IntegerField(constraints=[Check("stock >= 0")])
        issued = IntegerField(default=0, constraints=[Check("issued >= 0")])
        starts_at = DateTimeField()
        ends_at = DateTimeField()
        created_at = DateTimeField()

        class Meta:
            table_name = "coupons"
            constraints = [SQL("CHECK (issued <= stock)")]


    class UserCoupon(Base):
        """A coupon issued to a user (one per user and coupon); held by at most one live order."""

        id = BigAutoField()
        user = ForeignKeyField(User, on_delete="CASCADE")
        coupon = ForeignKeyField(Coupon, on_delete="CASCADE")
        used = BooleanField(default=False)
        order_id = BigIntegerField(null=True)
        expires_at = DateTimeField()
        created_at = DateTimeField()

        class Meta:
            table_name = "user_coupons"
            indexes = ((("user", "coupon"), True),)


    class Order(Base):
        """An order: NOT_PAID until paid (PAID) or swept after ``expires_at`` (EXPIRED)."""

        id = BigAutoField()
        user = ForeignKeyField(User, on_delete="CASCADE")
        status = CharField(max_length=10)
        total = BigIntegerField()
        discount = BigIntegerField(default=0)
        pay_amount = BigIntegerField(constraints=[Check("pay_amount >= 0")])
        user_coupon_id = BigIntegerField(null=True)
        created_at = DateTimeField()
        expires_at = DateTimeField()
        paid_at = DateTimeField(null=True)
        expired_at = DateTimeField(null=True)

        class Meta:
            table_name = "orders"
            indexes = ((("user", "id"), False), (("status", "expires_at"), False))


    class OrderItem(Base):
        """A product line of an order, at the price when it was ordered."""

        id = BigAutoField()
        order = ForeignKeyField(Order, on_delete="CASCADE", backref="items")
        product = ForeignKeyField(Product)
        quantity = IntegerField(constraints=[Check("quantity > 0")])
        unit_price = BigIntegerField()

        class Meta:
            table_name = "order_items"


    class ProductSalesDaily(Base):
        """Units sold in paid orders, per product and UTC day (the best-seller aggregate)."""

        product = ForeignKeyField(Product, on_delete="CASCADE")
        day = DateField()
        units = IntegerField()

        class Meta:
            table_name = "product_sales_daily"
            primary_key = CompositeKey("product", "day")


    class OutboxEvent(Base):
        """An event for the data platform, written in the transaction that caused it."""

        id = BigAutoField()
        topic = CharField(max_length=64)
        payload = JSONField()
        status = CharField(max_length=10, default="PENDING")
        attempts = IntegerField(default=0)
        next_attempt_at = DateTimeField()
        last_error = TextField(null=True)
        created_at = DateTimeField()
        delivered_at = DateTimeField(null=True)

        class Meta:
            table_name = "outbox_events"
            indexes = ((("status", "next_attempt_at"), False),)

    db.create_tables(
        [Product, CartItem, Coupon, UserCoupon, Order, OrderItem, ProductSalesDaily, OutboxEvent]
    )
