"""The orders service's SQL: orders as `Order` rows in the caller's session (the caller commits, except where
the saga commits a step: services.common.db).

A step of the saga is recorded by `move`, a compare-and-set on the order's step, so of two runners of one order
only the one that still sees the step it did records its outcome.
"""

from sqlalchemy import func, select, update

from services.orders import domain
from services.orders.models import Order


def add_order(session, order):
    session.add(order)


def delete_order(session, order):
    session.delete(order)


def find_order(session, order_id):
    """The order `order_id`, or None."""
    return session.get(Order, order_id)


def reload_order(session, order_id):
    """The order `order_id` as the database has it now (another runner may have moved it), or None."""
    session.expire_all()
    return session.get(Order, order_id)


def find_by_key(session, user_id, idempotency_key):
    """The order `user_id` placed with `idempotency_key`, or None."""
    return session.scalar(select(Order).where(Order.user_id == user_id, Order.idempotency_key == idempotency_key))


def user_orders(session, user_id, limit, offset):
    """(total, orders): how many orders `user_id` has, and a page of them, newest first."""
    mine = Order.user_id == user_id
    total = session.scalar(select(func.count()).select_from(Order).where(mine))
    orders = session.scalars(
        select(Order).where(mine).order_by(Order.created_at.desc(), Order.id).limit(limit).offset(offset)
    ).all()
    return total, orders


def recent_orders(session, status, limit):
    """The newest `limit` orders of every user (of `status` only, unless it is None), newest first."""
    query = select(Order).order_by(Order.created_at.desc(), Order.id).limit(limit)
    if status is not None:
        query = query.where(Order.status == status)
    return session.scalars(query).all()


def count_by_status(session):
    """[(status, how many orders)] of the statuses that have orders."""
    return session.execute(select(Order.status, func.count()).group_by(Order.status)).all()


def cancel(session, order_id, now):
    """confirmed and done → cancelled, the saga to undo it (`cancelling`); False when the order is not in that
    state."""
    cancelled = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == domain.CONFIRMED, Order.step == domain.DONE)
        .values(status=domain.CANCELLED, step=domain.CANCELLING, updated_at=now)
    )
    return cancelled.rowcount == 1


def move(session, order, from_step, transition, now):
    """Record `transition` (and the order's items and total) if the order is still at `from_step`; False if
    another runner moved it first."""
    moved = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.step == from_step)
        .values(
            step=transition.step,
            status=transition.status,
            updated_at=now,
            items=order.items,
            total_cents=order.total_cents,
            failure_reason=transition.failure_reason or order.failure_reason,
        )
    )
    return moved.rowcount == 1


def stalled_orders(session, quiet_since, limit=100):
    """Ids of orders still in their saga that have not moved since `quiet_since`."""
    return session.scalars(
        select(Order.id).where(Order.step != domain.DONE, Order.updated_at < quiet_since).limit(limit)
    ).all()


def audit_rows(session):
    """Every order as the audit reads it: `[{"id", "status", "step", "total_cents"}]`."""
    return [
        {"id": order.id, "status": order.status, "step": order.step, "total_cents": order.total_cents}
        for order in session.scalars(select(Order))
    ]
