"""The orders database: orders with their saga state, plus the outbox, processed-events and processed-calls tables."""

from sqlalchemy import BigInteger, Column, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import declarative_base

from services.common.calls import processed_calls_table
from services.common.db import UtcDateTime
from services.common.events import processed_events_table
from services.common.outbox import outbox_table

Base = declarative_base()
outbox_table(Base.metadata)
processed_events_table(Base.metadata)
processed_calls_table(Base.metadata)


class Order(Base):
    __tablename__ = "orders"

    id = Column(String(36), primary_key=True)
    user_id = Column(String(36), nullable=False)
    cart_id = Column(String(36), nullable=False)
    status = Column(String(20), nullable=False)
    step = Column(String(20), nullable=False)
    failure_reason = Column(String(40), nullable=True)
    items = Column(Text, nullable=False, default="[]")  # JSON: the lines as checked out, prices frozen
    total_cents = Column(BigInteger, nullable=False, default=0)
    payment_method_id = Column(String(36), nullable=False)
    idempotency_key = Column(String(255), nullable=True)
    deadline_at = Column(UtcDateTime, nullable=False)
    created_at = Column(UtcDateTime, nullable=False)
    updated_at = Column(UtcDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_step_updated", "step", "updated_at"),
        Index("ix_orders_created", "created_at"),  # every user's newest orders (recent_orders)
    )
