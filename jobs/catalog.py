"""Products and carts."""

from __future__ import annotations

from datetime import datetime

from db.models import CartItem, Product
from jobs.errors import DomainError
from jobs.pagination import id_page


def product_view(product: Product, with_description: bool = False) -> dict:
    """The API's product body."""
    out = {"id": product.id, "name": product.name, "price": product.price,
           "stock": product.stock}
    if with_description:
        out["description"] = product.description
    return out


def create_product(name: str, price: int, stock: int, description: str, now: datetime) -> dict:
    """Add a product to the catalog."""
    product = Product.create(name=name, price=price, stock=stock, description=description,
                             created_at=now)
    return product_view(product, with_description=True)


def get_product(product_id: int) -> dict:
    """One product with its description; ``PRODUCT_NOT_FOUND`` otherwise."""
    product = Product.get_or_none(Product.id == product_id)
    if product is None:
        raise DomainError("PRODUCT_NOT_FOUND", "no such product")
    return product_view(product, with_description=True)


def list_products(limit: int, cursor: str | None) -> dict:
    """Products in catalog order, one page."""
    items, next_cursor = id_page(Product.select(), Product.id, limit, cursor)
    return {"items": [product_view(p) for p in items], "next_cursor": next_cursor}


def cart(user_id: int) -> dict:
    """The user's cart with its total."""
    rows = (CartItem.select(CartItem, Product).join(Product)
            .where(CartItem.user == user_id).order_by(CartItem.product))
    items = [{"product_id": c.product.id, "name": c.product.name, "price": c.product.price,
              "quantity": c.quantity} for c in rows]
    return {"items": items, "total": sum(i["price"] * i["quantity"] for i in items)}


def set_cart_quantity(user_id: int, product_id: int, quantity: int) -> dict:
    """Put ``quantity`` of a product in the cart (replacing what was there)."""
    product = Product.get_or_none(Product.id == product_id)
    if product is None:
        raise DomainError("PRODUCT_NOT_FOUND", "no such product")
    if quantity > product.stock:
        raise DomainError("OUT_OF_STOCK", f"only {product.stock} in stock")
    (CartItem.insert(user=user_id, product=product_id, quantity=quantity)
     .on_conflict(conflict_target=[CartItem.user, CartItem.product],
                  update={CartItem.quantity: quantity})
     .execute())
    return cart(user_id)


def reduce_cart_quantity(user_id: int, product_id: int, quantity: int | None) -> dict:
    """Take ``quantity`` (default: all) of a product out of the cart."""
    item = CartItem.get_or_none((CartItem.user == user_id) & (CartItem.product == product_id))
    if item is None:
        raise DomainError("CART_ITEM_NOT_FOUND", "this product is not in the cart")
    if quantity is not None and quantity > item.quantity:
        raise DomainError("INSUFFICIENT_CART_QUANTITY", f"the cart holds {item.quantity}")
    where = (CartItem.user == user_id) & (CartItem.product == product_id)
    if quantity is None or quantity == item.quantity:
        CartItem.delete().where(where).execute()
    else:
        CartItem.update(quantity=CartItem.quantity - quantity).where(where).execute()
    return cart(user_id)
