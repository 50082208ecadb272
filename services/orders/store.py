"""The orders service's SQL: orders as `OrderRow`s read and written with Core statements (the caller commits,
except where the saga commits a step: services.common.db).

The statements every order meets are built once: putting an ORM query or an UPDATE together again for every
step was a third of orders' CPU per order. A step of the saga is recorded by `move`, a compare-and-set on the
order's step, so of two runners of one order only the one that still sees the step it started from records
its outcome.
"""

from types import SimpleNamespace

from sqlalchemy import bindparam, delete, func, insert, select, update

from services.orders import domain
from services.orders.models import Order

ORDERS = Order.__table__

_BY_ID = select(ORDERS).where(ORDERS.c.id == bindparam("order_id"))
_BY_KEY = select(ORDERS).where(
    ORDERS.c.user_id == bindparam("user_id"), ORDERS.c.idempotency_key == bindparam("idempotency_key")
)
_MOVE = (
    update(ORDERS)
    .where(ORDERS.c.id == bindparam("order_id"), ORDERS.c.step == bindparam("from_step"))
    .values(
        step=bindparam("step"),
        status=bindparam("status"),
        failure_reason=bindparam("failure_reason"),
        items=bindparam("items"),
        total_cents=bindparam("total_cents"),
        updated_at=bindparam("now"),
    )
)


class OrderRow(SimpleNamespace):
    """An order as stored: one attribute per column (`items` is JSON text). The saga changes its copy in memory
    and `move` records it."""


def _row(mapping):
    return OrderRow(**mapping) if mapping is not None else None


def add_order(session, values):
    """Write the new order `values` (every column); IntegrityError when its idempotency key is taken (raised at
    the commit on SQLite)."""
    session.execute(insert(ORDERS), [values])
    return OrderRow(**values)


def delete_order(session, order_id):
    session.execute(delete(ORDERS).where(ORDERS.c.id == order_id))


def find_order(session, order_id):
    """The order `order_id` as the database has it now (another runner may have moved it), or None."""
    return _row(session.execute(_BY_ID, {"order_id": order_id}).mappings().first())


reload_order = find_order


def find_by_key(session, user_id, idempotency_key):
    """The order `user_id` placed with `idempotency_key`, or None."""
    return _row(session.execute(_BY_KEY, {"user_id": user_id, "idempotency_key": idempotency_key}).mappings().first())


def user_orders(session, user_id, limit, offset):
    """(total, orders): how many orders `user_id` has, and a page of them, newest first."""
    mine = ORDERS.c.user_id == user_id
    total = session.scalar(select(func.count()).select_from(ORDERS).where(mine))
    rows = session.execute(
        select(ORDERS).where(mine).order_by(ORDERS.c.created_at.desc(), ORDERS.c.id).limit(limit).offset(offset)
    ).mappings()
    return total, [OrderRow(**row) for row in rows]


def recent_orders(session, status, limit):
    """The newest `limit` orders of every user (of `status` only, unless it is None), newest first."""
    query = select(ORDERS).order_by(ORDERS.c.created_at.desc(), ORDERS.c.id).limit(limit)
    if status is not None:
        query = query.where(ORDERS.c.status == status)
    return [OrderRow(**row) for row in session.execute(query).mappings()]


def count_by_status(session):
    """[(status, how many orders)] of the statuses that have orders."""
    return session.execute(select(ORDERS.c.status, func.count()).group_by(ORDERS.c.status)).all()


def cancel(session, order_id, now):
    """confirmed and done → cancelled, the saga to undo it (`cancelling`); False when the order is not in that
    state."""
    cancelled = session.execute(
        update(ORDERS)
        .where(ORDERS.c.id == order_id, ORDERS.c.status == domain.CONFIRMED, ORDERS.c.step == domain.DONE)
        .values(status=domain.CANCELLED, step=domain.CANCELLING, updated_at=now)
    )
    return cancelled.rowcount == 1


def move(session, order, from_step, now):
    """Record the order as `order` has it now (step, status, failure reason, items and total) if the database
    still has it at `from_step`; False if another runner moved it first."""
    moved = session.execute(
        _MOVE,
        {
            "order_id": order.id,
            "from_step": from_step,
            "step": order.step,
            "status": order.status,
            "failure_reason": order.failure_reason,
            "items": order.items,
            "total_cents": order.total_cents,
            "now": now,
        },
    )
    if moved.rowcount == 1:
        order.updated_at = now
        return True
    return False


def stalled_orders(session, quiet_since, limit=100):
    """Ids of orders still in their saga that have not moved since `quiet_since`."""
    return session.scalars(
        select(ORDERS.c.id).where(ORDERS.c.step != domain.DONE, ORDERS.c.updated_at < quiet_since).limit(limit)
    ).all()


def audit_rows(session):
    """Every order as the audit reads it: `[{"id", "status", "step", "total_cents"}]`."""
    return [
        dict(row)
        for row in session.execute(select(ORDERS.c.id, ORDERS.c.status, ORDERS.c.step, ORDERS.c.total_cents)).mappings()
    ]
