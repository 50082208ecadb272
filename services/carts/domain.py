"""The carts service's rules as plain functions: merging a new cart's items, checkout, arithmetic, the cart's
shape. Identifiers and limits shared with other services (sku, uuid, user id, quantity) are
`services.common.rules`.

Nothing here touches the broker or the database, so unit tests call these directly.
"""

import uuid

from services.common.clock import iso_utc
from services.common.errors import Conflict, EmptyCart, ValidationFailed
from services.common.rules import MAX_QUANTITY, validate_quantity, validate_sku

OPEN = "open"
CHECKED_OUT = "checked_out"
STATUSES = (OPEN, CHECKED_OUT)


def new_cart_id():
    return str(uuid.uuid4())


# --- input --------------------------------------------------------------------------------------------------


def merge_items(items):
    """The lines of a new cart from `items` (`[{"sku", "quantity"}]` or None): `{sku: quantity}`.

    Repeated skus are summed; a sum over 999 is refused like a single quantity over 999 would be.
    """
    if items is None:
        return {}
    if not isinstance(items, list):
        raise ValidationFailed.field("items", "must be a list of {sku, quantity} objects")
    merged = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationFailed.field(f"items[{index}]", "must be an object with sku and quantity")
        unexpected = set(item) - {"sku", "quantity"}
        if unexpected:
            raise ValidationFailed.field(f"items[{index}]", f"unexpected field {sorted(unexpected)[0]}")
        sku = validate_sku(item.get("sku"), f"items[{index}].sku")
        quantity = validate_quantity(item.get("quantity"), 1, f"items[{index}].quantity")
        total = merged.get(sku, 0) + quantity
        if total > MAX_QUANTITY:
            raise ValidationFailed.field(f"items[{index}].quantity", f"the line for {sku} would exceed {MAX_QUANTITY}")
        merged[sku] = total
    return merged


# --- checkout ------------------------------------------------------------------------------------------------

ALREADY_CHECKED_OUT = "already_checked_out"
CHECK_OUT = "check_out"


def checkout_step(cart, lines, order_id):
    """What `checkout_cart` does with the cart row `cart` and its `lines` for order `order_id`.

    `ALREADY_CHECKED_OUT` when this order checked the cart out before (the repeat answers the frozen cart),
    `CHECK_OUT` for an open cart with lines; Conflict for a cart another order checked out, EmptyCart for an
    open cart without lines.
    """
    if cart["status"] == CHECKED_OUT:
        if cart.get("checked_out_by") == order_id:
            return ALREADY_CHECKED_OUT
        raise checked_out_conflict()
    if not lines:
        raise empty_cart()
    return CHECK_OUT


def empty_cart():
    return EmptyCart("the cart has no lines to check out")


def checked_out_conflict():
    return Conflict("the cart is checked out and can no longer be changed", {"status": CHECKED_OUT})


def released_conflict():
    # The order gave the cart up (it failed): a checkout of it arriving late must not take the cart again.
    return Conflict("the order has already released its cart", {"status": "released"})


def frozen_values(lines, products):
    """`{sku: (name, unit_price_cents)}` to store on `lines` at checkout: the catalog's current values from
    `products` ({sku: product}); lines whose sku the catalog did not return keep the stored ones (absent)."""
    return {
        line["sku"]: (products[line["sku"]]["name"], products[line["sku"]]["price_cents"])
        for line in lines
        if line["sku"] in products
    }


# --- arithmetic and the cart's shape ------------------------------------------------------------------------


def line_total(quantity, unit_price_cents):
    return quantity * unit_price_cents


def cart_total(items):
    """The sum of the line totals of cart items (dicts with `line_total_cents`)."""
    return sum(item["line_total_cents"] for item in items)


def build_item(line, product=None):
    """A cart item from a stored line and, if given, the catalog's current product for its sku."""
    name = product["name"] if product else line["name"]
    unit_price = product["price_cents"] if product else line["unit_price_cents"]
    return {
        "sku": line["sku"],
        "name": name,
        "quantity": line["quantity"],
        "unit_price_cents": unit_price,
        "line_total_cents": line_total(line["quantity"], unit_price),
    }


def build_cart(cart, lines, products):
    """The cart as callers see it, from its stored row, its stored lines and `products` ({sku: product}).

    An open cart shows the catalog's current name and price of each line, the stored ones for a sku the
    catalog did not return; a checked-out cart always shows the stored (frozen) ones.
    """
    current = products if cart["status"] == OPEN else {}
    items = [build_item(line, current.get(line["sku"])) for line in sorted(lines, key=lambda line: line["sku"])]
    return {
        "id": cart["id"],
        "status": cart["status"],
        "items": items,
        "total_cents": cart_total(items),
        "created_at": iso_utc(cart["created_at"]),
        "updated_at": iso_utc(cart["updated_at"]),
    }


def products_by_sku(products):
    """`{sku: product}` from the list `catalog.get_products` returns."""
    return {product["sku"]: product for product in products}


def unknown_skus(skus, products):
    """The skus among `skus` that `products` ({sku: product}) lacks, in sku order."""
    return sorted(set(skus) - set(products))
