"""The carts service's rules as plain functions: input validation, merging, arithmetic, the cart's shape.

Nothing here touches the broker or the database, so unit tests call these directly.
"""

import re
import uuid

from services.common.db import iso_utc
from services.common.errors import Conflict, EmptyCart, ValidationFailed

OPEN = "open"
CHECKED_OUT = "checked_out"
STATUSES = (OPEN, CHECKED_OUT)

MAX_QUANTITY = 999
MAX_USER_ID_LENGTH = 64

_SKU = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- identifiers and time ---------------------------------------------------------------------------------


def new_cart_id():
    return str(uuid.uuid4())


def normalize_cart_id(value):
    """The stored form of cart id `value` (lower-case canonical UUID), or None when it cannot be a cart id.

    Anything else (not a string, braces, no hyphens, garbage) is None, so callers answer NotFound without
    asking the database.
    """
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value.lower()
    return None


def normalize_order_id(value):
    """The stored form of order id `value` (lower-case canonical UUID), or None when it cannot be one."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value.lower()
    return None


def validate_order_id(value):
    """`value` as a stored order id; ValidationFailed when it is not a UUID string."""
    order_id = normalize_order_id(value)
    if order_id is None:
        raise ValidationFailed.field("order_id", "must be a UUID string")
    return order_id


# --- input validation -------------------------------------------------------------------------------------


def validate_user_id(user_id):
    """The owner's id as given by the gateway (the token's subject): a non-empty string."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
        raise ValidationFailed.field("user_id", f"must be a string of 1 to {MAX_USER_ID_LENGTH} characters")
    return user_id


def is_valid_sku(sku):
    return isinstance(sku, str) and _SKU.fullmatch(sku) is not None


def validate_sku(sku, field="sku"):
    if not is_valid_sku(sku):
        raise ValidationFailed.field(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")
    return sku


def validate_quantity(quantity, minimum=1, field="quantity"):
    """`quantity` if it is an integer in minimum..999; bools, floats and strings are refused."""
    if type(quantity) is not int or not minimum <= quantity <= MAX_QUANTITY:
        raise ValidationFailed.field(field, f"must be an integer from {minimum} to {MAX_QUANTITY}")
    return quantity


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
