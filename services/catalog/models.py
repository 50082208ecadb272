"""The catalog database: products, the stock holds of orders and their lines, the outbox, and the processed calls
(services.common.calls)."""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.calls import processed_calls_table
from services.common.clock import utcnow
from services.common.db import UtcDateTime
from services.common.outbox import outbox_table
from services.common.rules import PRODUCT_DESCRIPTION_MAX_LENGTH, PRODUCT_NAME_MAX_LENGTH, SKU_MAX_LENGTH


class Base(DeclarativeBase):
    pass


outbox_table(Base.metadata)
processed_calls_table(Base.metadata)

# Byte order for skus on PostgreSQL too (SQLite compares bytes already), so "sku order" is the same everywhere
# whatever the database's default collation.
SkuType = String(SKU_MAX_LENGTH).with_variant(String(SKU_MAX_LENGTH, collation="C"), "postgresql")


# A product as the RPC methods answer it (on_hand stays internal).
PUBLIC_FIELDS = ("sku", "name", "description", "price_cents", "stock")


class Product(Base):
    """A product, keyed by its sku. 64-bit amounts leave room for sums of the bounded values domain accepts.

    `stock` is what can still be bought; `on_hand` is what the shop counts as its own: stock plus the units
    held for orders and the units sold (docs/SERVICES.md, "catalog: stock holds").
    """

    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(SkuType, primary_key=True)
    name: Mapped[str] = mapped_column(String(PRODUCT_NAME_MAX_LENGTH), nullable=False)
    description: Mapped[str] = mapped_column(
        String(PRODUCT_DESCRIPTION_MAX_LENGTH), nullable=False, default="", server_default=""
    )
    price_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stock: Mapped[int] = mapped_column(BigInteger, nullable=False)
    on_hand: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Grows with every change of the row (store.py), so a reader of product events keeps the newest.
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # The last line of defence against overselling: a statement that would take stock below zero fails.
        CheckConstraint("stock >= 0", name="ck_products_stock"),
    )

    def to_dict(self):
        """The product as the RPC methods answer it (on_hand stays internal)."""
        return {field: getattr(self, field) for field in PUBLIC_FIELDS}

    def versioned(self):
        """The product as events carry it: its public fields and its version."""
        return dict(self.to_dict(), version=self.version)


class StockHold(Base):
    """The stock an order holds: `held` (out of stock, not sold yet), `committed` (sold) or `released`
    (given back; with no lines, a tombstone that refuses a late reserve for the order)."""

    __tablename__ = "stock_holds"

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(12), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint("status IN ('held', 'committed', 'released')", name="ck_stock_holds_status"),
        # The expiry sweep looks for held holds past their time.
        Index("ix_stock_holds_status_expires", "status", "expires_at"),
    )


class StockHoldLine(Base):
    """`quantity` units of one product in an order's hold."""

    __tablename__ = "stock_hold_lines"

    order_id: Mapped[str] = mapped_column(String(36), ForeignKey("stock_holds.order_id"), primary_key=True)
    sku: Mapped[str] = mapped_column(SkuType, ForeignKey("products.sku"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (CheckConstraint("quantity > 0", name="ck_stock_hold_lines_quantity"),)
