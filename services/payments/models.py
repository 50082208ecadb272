"""The payments database: the payment methods (last four digits, verdict and owner, never a card number), one
charge row per order, and the processed calls (services.common.calls).

The charge row's primary key is the order id: it is what makes `charge` idempotent and lets exactly one of
concurrent callers decide the order's result.
"""

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, MetaData, String
from sqlalchemy.orm import declarative_base

from services.common.calls import processed_calls_table
from services.common.db import UtcDateTime
from services.payments.domain import STATUSES, VERDICTS

# Named constraints, so that later migrations can refer to them on both backends.
NAMING = {
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Base = declarative_base(metadata=MetaData(naming_convention=NAMING))
processed_calls_table(Base.metadata)


def _one_of(column, values):
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class PaymentMethod(Base):
    """A registered card: its last four digits, the provider's verdict for it, and the user who registered it (only
    that user's orders may be charged on it; NULL for a method registered before owners were recorded)."""

    __tablename__ = "payment_methods"

    id = Column(String(36), primary_key=True)
    last4 = Column(String(4), nullable=False)
    verdict = Column(String(32), nullable=False)
    user_id = Column(String(36), nullable=True)
    created_at = Column(UtcDateTime, nullable=False)

    __table_args__ = (
        # The database itself refuses anything longer than four characters here.
        CheckConstraint("length(last4) = 4", name="last4"),
        CheckConstraint(_one_of("verdict", VERDICTS), name="verdict"),
    )


class Charge(Base):
    """The order's charge: decided once (succeeded or declined), or a voided tombstone; refunded later.

    A tombstone has amount 0 and no payment method.
    """

    __tablename__ = "charges"

    order_id = Column(String(36), primary_key=True)
    status = Column(String(16), nullable=False)
    reason = Column(String(32), nullable=True)
    amount_cents = Column(BigInteger, nullable=False)
    payment_method_id = Column(String(36), ForeignKey("payment_methods.id"), nullable=True)
    last4 = Column(String(4), nullable=True)
    created_at = Column(UtcDateTime, nullable=False)
    refunded_at = Column(UtcDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        CheckConstraint("amount_cents >= 0", name="amount_cents"),
        CheckConstraint("last4 IS NULL OR length(last4) = 4", name="last4"),
    )


payment_methods = PaymentMethod.__table__
charges = Charge.__table__
