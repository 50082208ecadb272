"""The catalog's rules, callable without a broker or a database: what a product, a change, a page and a stock
hold are. Identifiers and limits shared with other services (sku, uuid, quantity, amounts, text lengths, pages)
are `services.common.rules`."""

from services.common.errors import ValidationFailed
from services.common.rules import (
    MAX_AMOUNT,
    MAX_OFFSET,
    MAX_PAGE_LIMIT,
    MAX_QUANTITY,
    PRODUCT_DESCRIPTION_MAX_LENGTH,
    PRODUCT_NAME_MAX_LENGTH,
    SEARCH_MAX_LENGTH,
    SKU_REASON,
    is_sku,
    is_whole_number,
)

REQUIRED_FIELDS = ("sku", "name", "price_cents", "stock")
CHANGEABLE_FIELDS = ("name", "description", "price_cents", "stock")


def sku_problem(value):
    if not is_sku(value):
        return SKU_REASON
    return None


def name_problem(value):
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= PRODUCT_NAME_MAX_LENGTH:
        return f"must be 1 to {PRODUCT_NAME_MAX_LENGTH} characters"
    if not value.strip():
        return "must not be blank"
    return None


def description_problem(value):
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > PRODUCT_DESCRIPTION_MAX_LENGTH:
        return f"must be at most {PRODUCT_DESCRIPTION_MAX_LENGTH} characters"
    return None


def amount_problem(value):
    if not is_whole_number(value) or not 0 <= value <= MAX_AMOUNT:
        return f"must be a whole number from 0 to {MAX_AMOUNT}"
    return None


FIELD_CHECKS = {
    "sku": sku_problem,
    "name": name_problem,
    "description": description_problem,
    "price_cents": amount_problem,
    "stock": amount_problem,
}


def _field_errors(values, allowed):
    """{field: reason} for every field of `values` that is unknown or breaks its rule."""
    errors = {}
    for field, value in values.items():
        if field not in allowed:
            errors[str(field)] = "cannot be changed" if field == "sku" else "unknown field"
        else:
            problem = FIELD_CHECKS[field](value)
            if problem:
                errors[field] = problem
    return errors


def validate_new_product(product):
    """The complete product (description defaults to "") or `ValidationFailed` naming each bad field."""
    if not isinstance(product, dict):
        raise ValidationFailed.field("product", "must be an object")
    errors = _field_errors(product, FIELD_CHECKS)
    for field in REQUIRED_FIELDS:
        if field not in product:
            errors[field] = "is required"
    ValidationFailed.raise_if(errors)
    return {"description": "", **product}


def validate_changes(changes):
    """The changes to apply (any of name, description, price_cents, stock), or `ValidationFailed`."""
    if not isinstance(changes, dict):
        raise ValidationFailed.field("changes", "must be an object")
    if not changes:
        raise ValidationFailed.field("changes", f"must name at least one of {', '.join(CHANGEABLE_FIELDS)}")
    ValidationFailed.raise_if(_field_errors(changes, CHANGEABLE_FIELDS))
    return dict(changes)


def validate_page(limit, offset, q):
    """`(limit, offset, q)` of a product listing, checked; an empty `q` is no filter (None)."""
    errors = {}
    if not is_whole_number(limit) or not 1 <= limit <= MAX_PAGE_LIMIT:
        errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE_LIMIT}"
    if not is_whole_number(offset) or not 0 <= offset <= MAX_OFFSET:
        errors["offset"] = f"must be a whole number from 0 to {MAX_OFFSET}"
    if q is not None and not isinstance(q, str):
        errors["q"] = "must be a string"
    elif q is not None and len(q) > SEARCH_MAX_LENGTH:
        errors["q"] = f"must be at most {SEARCH_MAX_LENGTH} characters"
    ValidationFailed.raise_if(errors)
    return limit, offset, (q or None)


# Stock holds ------------------------------------------------------------------------------------------------

HELD, COMMITTED, RELEASED = "held", "committed", "released"
HOLD_STATUSES = (HELD, COMMITTED, RELEASED)
# Units of a hold in these states are out of `stock` but still counted in `on_hand`.
OUTSTANDING = (HELD, COMMITTED)
MAX_LINES = 1000


def validate_lines(lines):
    """The lines of a hold as `[{"sku", "quantity"}]` in sku order, or ValidationFailed naming each bad one.

    A line is exactly `{"sku", "quantity"}` with a well-formed sku and a whole quantity from 1 to 999; there is
    at least one line and no sku appears twice.
    """
    if not isinstance(lines, (list, tuple)) or not lines:
        raise ValidationFailed.field("lines", "must be a non-empty list")
    if len(lines) > MAX_LINES:
        raise ValidationFailed.field("lines", f"must have at most {MAX_LINES} lines")
    errors, seen = {}, set()
    for index, line in enumerate(lines):
        where = f"lines[{index}]"
        if not isinstance(line, dict):
            errors[where] = "must be an object with sku and quantity"
            continue
        for field in sorted(set(line) - {"sku", "quantity"}, key=str):
            errors[f"{where}.{field}"] = "unknown field"
        sku, quantity = line.get("sku"), line.get("quantity")
        if not is_sku(sku):
            errors[f"{where}.sku"] = SKU_REASON
        elif sku in seen:
            errors[f"{where}.sku"] = "appears in an earlier line"
        else:
            seen.add(sku)
        if not is_whole_number(quantity) or not 1 <= quantity <= MAX_QUANTITY:
            errors[f"{where}.quantity"] = f"must be a whole number from 1 to {MAX_QUANTITY}"
    ValidationFailed.raise_if(errors)
    return sorted(({"sku": line["sku"], "quantity": line["quantity"]} for line in lines), key=lambda line: line["sku"])


def stock_breaches(counts):
    """What breaks the stock invariants, one sentence per breach naming the sku and the numbers.

    `counts`: `[{"sku", "stock", "on_hand", "held", "committed"}]`, where held and committed are the units of
    the product's lines in holds of that status. Every product must have `on_hand == stock + held + committed`
    and `stock >= 0`.
    """
    breaches = []
    for row in counts:
        sku, stock, on_hand, held, committed = (row["sku"], row["stock"], row["on_hand"], row["held"], row["committed"])
        if stock < 0:
            breaches.append(f"product {sku}: stock {stock} is below zero")
        if on_hand != stock + held + committed:
            breaches.append(
                f"product {sku}: on_hand {on_hand} != stock {stock} + held {held} + "
                f"committed {committed} (= {stock + held + committed})"
            )
    return breaches
