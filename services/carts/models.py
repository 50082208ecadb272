"""The carts service's tables: a cart per row in `carts`, one row per sku in `cart_lines`, the orders that
released their cart in `released_orders`, carts' copy of the catalog's names and prices in `products`, and the
shared `processed_events` and `processed_calls`.

A line stores the name and unit price the catalog last gave for its sku: an open cart shows the copy's current
values and falls back to these; a checked-out cart shows these (frozen at checkout).
"""

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import declarative_base

from services.carts.domain import STATUSES
from services.common.calls import processed_calls_table
from services.common.db import UtcDateTime
from services.common.events import processed_events_table
from services.common.rules import MAX_QUANTITY

# Named constraints, so that later migrations can refer to them on both backends.
NAMING = {
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Base = declarative_base(metadata=MetaData(naming_convention=NAMING))
processed_events = processed_events_table(Base.metadata)
processed_calls_table(Base.metadata)

_STATUS_LIST = ", ".join(f"'{status}'" for status in STATUSES)


class Cart(Base):
    """A user's cart; `checked_out_by` is the id of the order that checked it out (NULL while open)."""

    __tablename__ = "carts"

    id = Column(String(36), primary_key=True)
    user_id = Column(String(64), nullable=False)
    status = Column(String(16), nullable=False)
    created_at = Column(UtcDateTime, nullable=False)
    updated_at = Column(UtcDateTime, nullable=False)
    checked_out_by = Column(String(36), nullable=True)

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
        Index("ix_carts_user_id_created_at", "user_id", "created_at"),
    )


class CartLine(Base):
    """One sku in a cart, with the name and price the catalog last gave for it."""

    __tablename__ = "cart_lines"

    cart_id = Column(String(36), ForeignKey("carts.id", ondelete="CASCADE"), primary_key=True)
    sku = Column(String(64), primary_key=True)
    quantity = Column(Integer, nullable=False)
    name = Column(String(200), nullable=False)
    unit_price_cents = Column(Integer, nullable=False)

    __table_args__ = (
        CheckConstraint(f"quantity BETWEEN 1 AND {MAX_QUANTITY}", name="quantity"),
        CheckConstraint("unit_price_cents >= 0", name="unit_price_cents"),
    )


class ReleasedOrder(Base):
    """An order that gave its cart up (`reopen_cart`): a checkout for it that arrives later is refused, so a
    late call cannot check out a cart that the order's failure already reopened."""

    __tablename__ = "released_orders"

    order_id = Column(String(36), primary_key=True)
    released_at = Column(UtcDateTime, nullable=False)


class Product(Base):
    """What carts needs of a catalog product: its name and price as catalog last announced them, and the
    product's `version` then (catalog's, only ever growing), so that an older event never overwrites a newer one."""

    __tablename__ = "products"

    sku = Column(String(64), primary_key=True)
    name = Column(String(200), nullable=False)
    price_cents = Column(BigInteger, nullable=False)
    version = Column(BigInteger, nullable=False)


carts = Cart.__table__
products = Product.__table__
cart_lines = CartLine.__table__
released_orders = ReleasedOrder.__table__
