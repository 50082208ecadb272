"""The catalog's SQL: products, the stock holds of orders, and the counts the audit checks.

Functions take the worker's session and write in its transaction; the caller commits (services.common.db). Reads
answer plain dicts. Every stock change is a conditional UPDATE, so concurrent callers (in one container or
several) cannot take or give back the same units twice. Locks are taken in one order, products in sku order and a
hold's row before its products, so concurrent holds never deadlock. On SQLite the first UPDATE takes the
database's write lock, so from there on the transaction runs alone.
"""

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.catalog.domain import COMMITTED, HELD, OUTSTANDING, RELEASED
from services.catalog.models import PUBLIC_FIELDS, Product, StockHold, StockHoldLine
from services.common.errors import OutOfStock

# Skus per `IN (...)` query: well under SQLite's limit on bound parameters.
SKUS_PER_QUERY = 500
# The answer's columns as a plain Core select: the read methods answer dicts, and loading ORM objects only to
# turn them into dicts was about half of `get_products`' time under the cart read load.
PRODUCTS = Product.__table__
PUBLIC_COLUMNS = [PRODUCTS.c[field] for field in PUBLIC_FIELDS]
# Every change of a product's row takes the next version (models.Product.version).
NEXT_VERSION = Product.version + 1

# The statements of every order's stock hold, built once (putting them together again was a good part of
# catalog's CPU per order); the stock changes answer the product's new stock and version (RETURNING) for the
# stock_changed event, instead of reading the products again.
_HOLD_STATUS = select(StockHold.status).where(StockHold.order_id == bindparam("order_id"))
_TAKE_STOCK = (
    update(PRODUCTS)
    .where(PRODUCTS.c.sku == bindparam("line_sku"), PRODUCTS.c.stock >= bindparam("line_quantity"))
    .values(stock=PRODUCTS.c.stock - bindparam("line_quantity"), updated_at=bindparam("now"), version=NEXT_VERSION)
    .returning(PRODUCTS.c.sku, PRODUCTS.c.stock, PRODUCTS.c.version)
)
_GIVE_BACK = (
    update(PRODUCTS)
    .where(PRODUCTS.c.sku == bindparam("line_sku"))
    .values(stock=PRODUCTS.c.stock + bindparam("line_quantity"), updated_at=bindparam("now"), version=NEXT_VERSION)
    .returning(PRODUCTS.c.sku, PRODUCTS.c.stock, PRODUCTS.c.version)
)
_COMMIT_HOLD = (
    update(StockHold.__table__)
    .where(StockHold.order_id == bindparam("hold_order_id"), StockHold.status == HELD)
    .values(status=COMMITTED, updated_at=bindparam("now"))
)
_HOLD_LINES = (
    select(StockHoldLine.sku, StockHoldLine.quantity)
    .where(StockHoldLine.order_id == bindparam("order_id"))
    .order_by(StockHoldLine.sku)
)
_PRODUCTS_AMONG = select(*PUBLIC_COLUMNS, PRODUCTS.c.version).where(
    PRODUCTS.c.sku.in_(bindparam("skus", expanding=True))
)


# --- products ---------------------------------------------------------------------------------------------------


def _matching(q):
    """The WHERE conditions of a listing: `q` a literal, case-insensitive substring of name or description."""
    if q is None:
        return ()
    # autoescape makes % and _ in q plain characters, the same way on SQLite and PostgreSQL.
    return (or_(Product.name.icontains(q, autoescape=True), Product.description.icontains(q, autoescape=True)),)


def product_page(session, limit, offset, q):
    """(total, products): how many products match `q` (None: all), and the page of them in sku order."""
    conditions = _matching(q)
    total = session.scalar(select(func.count()).select_from(Product).where(*conditions))
    products = session.execute(
        select(*PUBLIC_COLUMNS).where(*conditions).order_by(PRODUCTS.c.sku).limit(limit).offset(offset)
    )
    return total, [dict(product) for product in products.mappings()]


def find_product(session, sku):
    """The product with `sku` as a dict, or None."""
    product = session.execute(select(*PUBLIC_COLUMNS).where(PRODUCTS.c.sku == sku)).mappings().one_or_none()
    return dict(product) if product is not None else None


def products_among(session, skus):
    """The products whose sku is among the (sorted, well-formed) `skus`, as dicts with their version."""
    found = []
    for start in range(0, len(skus), SKUS_PER_QUERY):
        found.extend(session.execute(_PRODUCTS_AMONG, {"skus": skus[start : start + SKUS_PER_QUERY]}).mappings())
    return [dict(product) for product in found]


def product_exists(session, sku):
    return session.get(Product, sku) is not None


def insert_product(session, fields):
    """Write the new product `fields` (all of its stock on hand, version 1); the product as a dict with its
    version. IntegrityError when its sku exists (a concurrent create won)."""
    created = Product(**fields, on_hand=fields["stock"], version=1)
    session.add(created)
    session.flush()
    return created.versioned()


def update_product(session, sku, changes, now):
    """Apply `changes` to the product; False when there is no such product. Setting `stock` moves `on_hand` by
    the same difference: held and sold units stay counted."""
    values = dict(changes, updated_at=now, version=NEXT_VERSION)
    if "stock" in changes:
        # One statement, evaluated on the row as it is when locked (both sides of `=` read the old values), so a
        # concurrent reserve or release cannot slip between reading and writing the stock.
        values["on_hand"] = Product.on_hand + (changes["stock"] - Product.stock)
    updated = session.execute(
        update(Product).where(Product.sku == sku).values(**values).execution_options(synchronize_session=False)
    )
    return updated.rowcount == 1


# --- stock holds ------------------------------------------------------------------------------------------------


def hold_status(session, order_id):
    """The status of the order's hold, or None when it has none."""
    return session.scalar(_HOLD_STATUS, {"order_id": order_id})


def take_stock(session, lines, now):
    """Take every line's quantity out of its product's stock, in sku order; `[(sku, stock, version)]` of the
    products as they are now. OutOfStock (details `{"sku"}`) for the first line whose product has too little or
    does not exist: the caller's rollback then gives back what earlier lines took, all lines or none."""
    changed = []
    for line in lines:
        taken = session.execute(
            _TAKE_STOCK, {"line_sku": line["sku"], "line_quantity": line["quantity"], "now": now}
        ).first()
        if taken is None:
            raise OutOfStock(f"not enough stock of {line['sku']}", {"sku": line["sku"]})
        changed.append(tuple(taken))
    return changed


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
    return session.execute(_COMMIT_HOLD, {"hold_order_id": order_id, "now": now}).rowcount == 1


def release_hold(session, order_id, now, expired_only=False):
    """Release the order's hold and give its units back to stock: `[(sku, stock, version)]` of the products
    given back, in sku order, or None when the hold was not in a state to release (absent, already released, or
    not an expired held one).

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
    lines = session.execute(_HOLD_LINES, {"order_id": order_id}).all()
    return [
        tuple(session.execute(_GIVE_BACK, {"line_sku": sku, "line_quantity": quantity, "now": now}).one())
        for sku, quantity in lines
    ]


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
    """The products among `skus` as dicts with their version, in sku order, read fresh from the database (this
    transaction's writes included)."""
    products = session.scalars(
        select(Product)
        .where(Product.sku.in_(sorted(skus)))
        .order_by(Product.sku)
        .execution_options(populate_existing=True)
    )
    return [product.versioned() for product in products]


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
