"""The catalog database: one table of products."""
from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def utc_now():
    return datetime.now(timezone.utc)


# Byte order for skus on PostgreSQL too (SQLite compares bytes already), so "sku order" is the same everywhere
# whatever the database's default collation.
SkuType = String(64).with_variant(String(64, collation="C"), "postgresql")


class Product(Base):
    """A product, keyed by its sku. 64-bit amounts leave room for sums of the bounded values domain accepts."""

    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(SkuType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(String(2000), nullable=False, default="", server_default="")
    price_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stock: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utc_now,
                                                 onupdate=utc_now)

    def to_dict(self):
        """The product as the RPC methods answer it."""
        return {"sku": self.sku, "name": self.name, "description": self.description,
                "price_cents": self.price_cents, "stock": self.stock}
