"""The carts service's SQL: reads return plain mappings, writes are single atomic statements.

Reads take no locks. Every change to an existing cart starts with a conditional update of its row
(`lock_open_cart`, `check_out`, or `reopen`'s `lock_cart`), which both serialises the writers of one cart (a row
lock on PostgreSQL, the database write lock on SQLite) and checks, in the same statement, the state the change
requires.
"""

from sqlalchemy import bindparam, delete, insert, select, text, update

from services.carts.domain import CHECKED_OUT, OPEN
from services.carts.models import cart_lines, carts, products, released_orders
from services.common.rules import MAX_QUANTITY

# The upserts, as SQL that SQLite (3.24+) and PostgreSQL both take as it is: SQLAlchemy's dialect `insert()` with
# `on_conflict_do_update` is not cacheable, so it was compiled again on every execution (about a millisecond of
# carts' CPU per cart write).
_ADD_TO_LINE = text(
    f"""INSERT INTO cart_lines (cart_id, sku, quantity, name, unit_price_cents)
    VALUES (:cart_id, :sku, :quantity, :name, :unit_price_cents)
    ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = cart_lines.quantity + excluded.quantity,
        name = excluded.name, unit_price_cents = excluded.unit_price_cents
    WHERE cart_lines.quantity + excluded.quantity <= {MAX_QUANTITY}"""
)
_SET_LINE = text(
    """INSERT INTO cart_lines (cart_id, sku, quantity, name, unit_price_cents)
    VALUES (:cart_id, :sku, :quantity, :name, :unit_price_cents)
    ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = excluded.quantity, name = excluded.name,
        unit_price_cents = excluded.unit_price_cents"""
)
_REMEMBER_PRODUCT = text(
    """INSERT INTO products (sku, name, price_cents, version) VALUES (:sku, :name, :price_cents, :version)
    ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents,
        version = excluded.version
    WHERE excluded.version > products.version"""
)
_RELEASE = text(
    "INSERT INTO released_orders (order_id, released_at) VALUES (:order_id, :released_at) "
    "ON CONFLICT (order_id) DO NOTHING"
).bindparams(bindparam("released_at", type_=released_orders.c.released_at.type))


# The reads every request makes, built once: executing a ready statement skips building and compiling it (a third
# of carts' CPU per cart read went to SQLAlchemy putting the same SELECT together again).
_CART_WITH_LINES = (
    select(
        carts,
        cart_lines.c.sku,
        cart_lines.c.quantity,
        cart_lines.c.name.label("line_name"),
        cart_lines.c.unit_price_cents,
        products.c.name.label("copy_name"),
        products.c.price_cents.label("copy_price_cents"),
        products.c.version.label("copy_version"),
    )
    .select_from(
        carts.outerjoin(cart_lines, cart_lines.c.cart_id == carts.c.id).outerjoin(
            products, products.c.sku == cart_lines.c.sku
        )
    )
    .where(carts.c.id == bindparam("cart_id"), carts.c.user_id == bindparam("user_id"))
    .order_by(cart_lines.c.sku)
)
_KNOWN_PRODUCTS = select(products).where(products.c.sku.in_(bindparam("skus", expanding=True)))
_CART_COLUMNS = tuple(column.name for column in carts.columns)


def read_cart(session, user_id, cart_id):
    """(cart row, lines, `{sku: product}` from the copy for its lines) of the cart `cart_id` if it belongs to
    `user_id`, else (None, [], {}). One statement."""
    rows = session.execute(_CART_WITH_LINES, {"cart_id": cart_id, "user_id": user_id}).mappings().all()
    if not rows:
        return None, [], {}
    cart = {column: rows[0][column] for column in _CART_COLUMNS}
    lines, copied = [], {}
    for row in rows:
        if row["sku"] is None:  # a cart without lines: its one row has no line
            continue
        lines.append(
            {
                "cart_id": cart_id,
                "sku": row["sku"],
                "quantity": row["quantity"],
                "name": row["line_name"],
                "unit_price_cents": row["unit_price_cents"],
            }
        )
        if row["copy_name"] is not None:
            copied[row["sku"]] = {
                "sku": row["sku"],
                "name": row["copy_name"],
                "price_cents": row["copy_price_cents"],
                "version": row["copy_version"],
            }
    return cart, lines, copied


def find_cart(session, user_id, cart_id):
    """The cart row `cart_id` if it belongs to `user_id`, else None."""
    return (
        session.execute(select(carts).where(carts.c.id == cart_id, carts.c.user_id == user_id)).mappings().one_or_none()
    )


def user_carts(session, user_id):
    """The rows of `user_id`'s carts, newest first."""
    return (
        session.execute(
            select(carts).where(carts.c.user_id == user_id).order_by(carts.c.created_at.desc(), carts.c.id.desc())
        )
        .mappings()
        .all()
    )


def lines_of(session, cart_ids):
    """`{cart_id: [line, ...]}` for every id in `cart_ids` (an empty list for a cart without lines)."""
    found = {cart_id: [] for cart_id in cart_ids}
    if not found:
        return found
    rows = (
        session.execute(select(cart_lines).where(cart_lines.c.cart_id.in_(list(found))).order_by(cart_lines.c.sku))
        .mappings()
        .all()
    )
    for row in rows:
        found[row["cart_id"]].append(row)
    return found


def insert_cart(session, cart, lines):
    """Write a new cart row and its lines (`[{"sku", "quantity", "name", "unit_price_cents"}]`)."""
    session.execute(insert(carts).values(**cart))
    if lines:
        session.execute(insert(cart_lines), [dict(line, cart_id=cart["id"]) for line in lines])


def lock_open_cart(session, user_id, cart_id, now):
    """Touch `updated_at` of the open cart `cart_id` of `user_id`; False when there is no such open cart.

    This first write takes the lock that makes the rest of the transaction safe against other writers.
    """
    result = session.execute(
        update(carts)
        .where(carts.c.id == cart_id, carts.c.user_id == user_id, carts.c.status == OPEN)
        .values(updated_at=now)
    )
    return result.rowcount == 1


def add_to_line(session, cart_id, sku, quantity, name, unit_price_cents):
    """Add `quantity` to the line (created if absent) in one statement; False, and nothing changed, when
    the line would exceed the maximum quantity."""
    line = {"cart_id": cart_id, "sku": sku, "quantity": quantity, "name": name, "unit_price_cents": unit_price_cents}
    return session.execute(_ADD_TO_LINE, line).rowcount == 1


def set_line(session, cart_id, sku, quantity, name, unit_price_cents):
    """Make the line's quantity `quantity` (created if absent) in one statement."""
    line = {"cart_id": cart_id, "sku": sku, "quantity": quantity, "name": name, "unit_price_cents": unit_price_cents}
    session.execute(_SET_LINE, line)


def delete_line(session, cart_id, sku):
    """Delete the line; False when it was not there."""
    result = session.execute(delete(cart_lines).where(cart_lines.c.cart_id == cart_id, cart_lines.c.sku == sku))
    return result.rowcount == 1


def delete_cart(session, cart_id):
    """Delete the cart and its lines."""
    session.execute(delete(cart_lines).where(cart_lines.c.cart_id == cart_id))
    session.execute(delete(carts).where(carts.c.id == cart_id))


# --- checkout ------------------------------------------------------------------------------------------------


def check_out(session, user_id, cart_id, order_id, now):
    """Mark the open cart `cart_id` of `user_id` checked out by `order_id`; False when it is not open (or not
    there). Of concurrent checkouts of one cart, only one finds it open: this update is the arbiter."""
    result = session.execute(
        update(carts)
        .where(carts.c.id == cart_id, carts.c.user_id == user_id, carts.c.status == OPEN)
        .values(status=CHECKED_OUT, checked_out_by=order_id, updated_at=now)
    )
    return result.rowcount == 1


def freeze_lines(session, cart_id, values):
    """Store `values` (`{sku: (name, unit_price_cents)}`) on the cart's lines."""
    for sku, (name, unit_price_cents) in sorted(values.items()):
        session.execute(
            update(cart_lines)
            .where(cart_lines.c.cart_id == cart_id, cart_lines.c.sku == sku)
            .values(name=name, unit_price_cents=unit_price_cents)
        )


def is_released(session, order_id):
    """Whether order `order_id` has released its cart (see `release`)."""
    return (
        session.execute(select(released_orders.c.order_id).where(released_orders.c.order_id == order_id)).first()
        is not None
    )


def release(session, order_id, now):
    """Record that order `order_id` gave its cart up (once; a repeat changes nothing)."""
    session.execute(_RELEASE, {"order_id": order_id, "released_at": now})


def lock_cart(session, cart_id):
    """Lock the cart's row whatever its state (PostgreSQL; SQLite already holds the database write lock), so
    a checkout of it in flight finishes first and what follows sees its outcome."""
    session.execute(select(carts.c.id).where(carts.c.id == cart_id).with_for_update())


def reopen(session, cart_id, order_id, now):
    """Open the cart `cart_id` again if order `order_id` checked it out; False (and no change) otherwise."""
    result = session.execute(
        update(carts)
        .where(carts.c.id == cart_id, carts.c.status == CHECKED_OUT, carts.c.checked_out_by == order_id)
        .values(status=OPEN, checked_out_by=None, updated_at=now)
    )
    return result.rowcount == 1


# --- the copy of the catalog's names and prices -------------------------------------------------------------------


def known_products(session, skus):
    """`{sku: {"sku", "name", "price_cents", "version"}}` of the copy's products among `skus`."""
    if not skus:
        return {}
    rows = session.execute(_KNOWN_PRODUCTS, {"skus": sorted(skus)}).mappings()
    return {row["sku"]: dict(row) for row in rows}


def remember_products(session, found):
    """Keep the name, price and version of each product in `found` (dicts with those keys and `sku`) unless the
    copy has that version or a newer one. One upsert per product, in sku order, so concurrent writers lock them in
    the same order."""
    if not found:
        return
    rows = sorted(
        ({key: product[key] for key in ("sku", "name", "price_cents", "version")} for product in found),
        key=lambda row: row["sku"],
    )
    session.execute(_REMEMBER_PRODUCT, rows)
