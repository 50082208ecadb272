"""The payments service's SQL: reads answer plain mappings, every write is a single statement.

`insert_charge_once` is where concurrent callers for one order meet: the charges table's primary key is the
order id, so exactly one insert wins and every caller answers the winner's row.
"""

from sqlalchemy import bindparam, insert, select, text, update

from services.payments.domain import REFUNDED, SUCCEEDED
from services.payments.models import charges, payment_methods

# As SQL both SQLite and PostgreSQL take: SQLAlchemy's dialect insert with on_conflict_do_nothing is not cacheable
# and was compiled again for every charge.
_COLUMNS = ("order_id", "status", "reason", "amount_cents", "payment_method_id", "last4", "created_at")
_INSERT_CHARGE_ONCE = text(
    f"INSERT INTO charges ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + column for column in _COLUMNS)}) "
    "ON CONFLICT (order_id) DO NOTHING"
).bindparams(bindparam("created_at", type_=charges.c.created_at.type))


def find_payment_method(session, method_id):
    """The payment method row `method_id`, or None."""
    return session.execute(select(payment_methods).where(payment_methods.c.id == method_id)).mappings().one_or_none()


def insert_payment_method(session, row):
    session.execute(insert(payment_methods).values(**row))


def find_charge(session, order_id):
    """The charge row of `order_id`, or None."""
    return session.execute(select(charges).where(charges.c.order_id == order_id)).mappings().one_or_none()


def insert_charge_once(session, row):
    """Insert charge `row` unless its order has a charge row already: (the order's row now, inserted?).

    One `INSERT ... ON CONFLICT DO NOTHING` on the order id: of concurrent callers for one order exactly one
    inserts. On PostgreSQL the losing insert waits for the winner's commit and then does nothing, and the
    re-read (READ COMMITTED) sees the winner's row; on SQLite writers are serialised by the database lock.
    """
    inserted = session.execute(_INSERT_CHARGE_ONCE, {column: row[column] for column in _COLUMNS}).rowcount == 1
    return find_charge(session, row["order_id"]), inserted


def refund_succeeded(session, order_id, now):
    """Mark the order's charge refunded if it is succeeded; False when it is not (any more)."""
    result = session.execute(
        update(charges)
        .where(charges.c.order_id == order_id, charges.c.status == SUCCEEDED)
        .values(status=REFUNDED, refunded_at=now)
    )
    return result.rowcount == 1


def all_charges(session):
    """Every charge row, in order id order."""
    return session.execute(select(charges).order_by(charges.c.order_id)).mappings().all()
