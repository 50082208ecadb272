"""The catalog's stock SQL: holds for orders, and the counts the audit checks. Every change is a conditional
UPDATE, so concurrent callers (in one container or several) cannot take or give back the same units twice.

Functions take the worker's session and write in its transaction; the caller commits. Locks are taken in one
order, products in sku order and a hold's row before its products, so concurrent holds never deadlock. On
SQLite the first UPDATE takes the database's write lock, so from there on the transaction runs alone.
"""

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.catalog.domain import COMMITTED, HELD, OUTSTANDING, RELEASED
from services.catalog.models import Product, StockHold, StockHoldLine
from services.common.errors import OutOfStock


def hold_status(session, order_id):
    """The status of the order's hold, or None when it has none."""
    return session.scalar(select(StockHold.status).where(StockHold.order_id == order_id))


def take_stock(session, lines, now):
    """Take every line's quantity out of its product's stock, in sku order; OutOfStock (details `{"sku"}`)
    for the first line whose product has too little or does not exist. The caller's rollback then gives back
    what earlier lines took: all lines or none."""
    for line in lines:
        taken = session.execute(
            update(Product)
            .where(Product.sku == line["sku"], Product.stock >= line["quantity"])
            .values(stock=Product.stock - line["quantity"], updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            raise OutOfStock(f"not enough stock of {line['sku']}", {"sku": line["sku"]})


def insert_hold(session, order_id, status, lines, now, expires_at):
    """Record the order's hold and its lines. IntegrityError when the order has a hold already (a concurrent
    caller won): the transaction must then be rolled back."""
    session.execute(
        insert(StockHold).values(
            order_id=order_id, status=status, expires_at=expires_at, created_at=now, updated_at=now
        )
    )
    if lines:
        session.execute(insert(StockHoldLine), [dict(line, order_id=order_id) for line in lines])


def commit_hold(session, order_id, now):
    """held → committed; True if this call moved it."""
    moved = session.execute(
        update(StockHold)
        .where(StockHold.order_id == order_id, StockHold.status == HELD)
        .values(status=COMMITTED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return moved.rowcount == 1


def release_hold(session, order_id, now, expired_only=False):
    """Release the order's hold and give its units back to stock: the skus given back, in sku order, or None
    when the hold was not in a state to release (absent, already released, or not an expired held one).

    The hold's row changes first, conditionally: of concurrent releases one moves it and gives back; the others
    find it released and give back nothing. With `expired_only`, only a held hold past `expires_at` is
    released (the expiry sweep: an order that committed meanwhile keeps its units).
    """
    if expired_only:
        condition = (StockHold.status == HELD, StockHold.expires_at < now)
    else:
        condition = (StockHold.status.in_(OUTSTANDING),)
    moved = session.execute(
        update(StockHold)
        .where(StockHold.order_id == order_id, *condition)
        .values(status=RELEASED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return None
    lines = session.execute(
        select(StockHoldLine.sku, StockHoldLine.quantity)
        .where(StockHoldLine.order_id == order_id)
        .order_by(StockHoldLine.sku)
    ).all()
    for sku, quantity in lines:
        session.execute(
            update(Product)
            .where(Product.sku == sku)
            .values(stock=Product.stock + quantity, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return [sku for sku, _quantity in lines]


def insert_tombstone(session, order_id, now):
    """A released hold with no lines for an order that had none, so a late reserve is refused. False when a
    hold appeared meanwhile (the caller rolls back and looks again)."""
    try:
        insert_hold(session, order_id, RELEASED, [], now, now)
    except IntegrityError:
        return False
    return True


def expired_holds(session, now, limit=100):
    """Order ids of held holds past their `expires_at`, oldest first."""
    return session.scalars(
        select(StockHold.order_id)
        .where(StockHold.status == HELD, StockHold.expires_at < now)
        .order_by(StockHold.expires_at)
        .limit(limit)
    ).all()


def products_by_sku(session, skus):
    """The products among `skus` as dicts, in sku order, read fresh from the database (this transaction's
    writes included)."""
    products = session.scalars(
        select(Product)
        .where(Product.sku.in_(sorted(skus)))
        .order_by(Product.sku)
        .execution_options(populate_existing=True)
    )
    return [product.to_dict() for product in products]


def all_holds(session):
    """`{order_id: status}` of every hold."""
    return dict(session.execute(select(StockHold.order_id, StockHold.status).order_by(StockHold.order_id)).all())


def stock_counts(session):
    """`[{"sku", "stock", "on_hand", "held", "committed"}]` per product, in sku order: held and committed are
    the units of its lines in holds of that status. One statement, so one consistent snapshot."""

    def units(status):
        return func.coalesce(func.sum(case((StockHold.status == status, StockHoldLine.quantity), else_=0)), 0)

    outstanding = (
        select(StockHoldLine.sku.label("sku"), units(HELD).label("held"), units(COMMITTED).label("committed"))
        .join(StockHold, StockHold.order_id == StockHoldLine.order_id)
        .where(StockHold.status.in_(OUTSTANDING))
        .group_by(StockHoldLine.sku)
        .subquery()
    )
    rows = session.execute(
        select(
            Product.sku,
            Product.stock,
            Product.on_hand,
            func.coalesce(outstanding.c.held, 0).label("held"),
            func.coalesce(outstanding.c.committed, 0).label("committed"),
        )
        .outerjoin(outstanding, outstanding.c.sku == Product.sku)
        .order_by(Product.sku)
    )
    return [dict(row._mapping) for row in rows]
