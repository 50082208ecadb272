"""The identifiers and limits that more than one part of Cartmesh checks: defined here once, in plain Python.

The services validate their inputs with these (defence in depth) and the gateway's request models take their
patterns and limits from here, so that whatever the gateway lets through a service accepts. Rules of one
service alone stay in that service's `domain.py`.

Patterns are written for JSON Schema (`^...$`); `re.fullmatch` with them takes the whole string, a final newline
included ("tea\\n" is not a sku).
"""

import re

from services.common.errors import ValidationFailed

# --- skus ---------------------------------------------------------------------------------------------------

SKU_MAX_LENGTH = 64
SKU_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SKU_REASON = "must be 1 to 64 characters of A-Z a-z 0-9 - _"
_SKU = re.compile(SKU_PATTERN)


def is_sku(value):
    """Whether `value` is a well-formed sku: 1–64 characters of A-Z a-z 0-9 - _."""
    return isinstance(value, str) and _SKU.fullmatch(value) is not None


def validate_sku(value, field="sku"):
    """`value` if it is a sku; ValidationFailed on `field` otherwise."""
    if not is_sku(value):
        raise ValidationFailed.field(field, SKU_REASON)
    return value


# --- ids: UUID strings ----------------------------------------------------------------------------------------

# Ids (carts, orders, payment methods) are accepted in the canonical 8-4-4-4-12 form only, in any case; they are
# stored lower-case, as `str(uuid.uuid4())` makes them.
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
UUID_REASON = "must be a UUID string"
_UUID = re.compile(UUID_PATTERN)


def is_uuid(value):
    """Whether `value` is a UUID string in canonical form (any case)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def normalize_uuid(value):
    """The stored form of id `value` (lower-case canonical UUID), or None when it cannot be an id.

    Anything else (not a string, braces, no hyphens, garbage) is None, so callers answer NotFound without asking
    the database.
    """
    return value.lower() if is_uuid(value) else None


def validate_order_id(value):
    """The stored form of order id `value`; ValidationFailed (field `order_id`) when it is not a UUID string."""
    order_id = normalize_uuid(value)
    if order_id is None:
        raise ValidationFailed.field("order_id", UUID_REASON)
    return order_id


# --- user ids ---------------------------------------------------------------------------------------------------

# The owner's id is the subject of the access token: the user's id in accounts, a UUID (36 characters), which is
# also the size of the user id columns. Checked as a string of that size, not as a UUID, so that services and
# tests can name owners freely.
USER_ID_MAX_LENGTH = 36


def validate_user_id(user_id):
    """The owner's id as the gateway gives it: a string of 1 to 36 characters. Anything else is refused before it
    reaches a query, where it would match nothing or fail in the driver."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= USER_ID_MAX_LENGTH:
        raise ValidationFailed.field("user_id", f"must be a string of 1 to {USER_ID_MAX_LENGTH} characters")
    return user_id


# --- numbers ----------------------------------------------------------------------------------------------------


def is_whole_number(value):
    """Whether `value` is a JSON integer: an int, and not a bool (True is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


# The most units of one sku in a cart line or an order line.
MAX_QUANTITY = 999


def validate_quantity(quantity, minimum=1, field="quantity"):
    """`quantity` if it is a whole number from `minimum` to 999; ValidationFailed on `field` otherwise."""
    if not is_whole_number(quantity) or not minimum <= quantity <= MAX_QUANTITY:
        raise ValidationFailed.field(field, f"must be an integer from {minimum} to {MAX_QUANTITY}")
    return quantity


# A price or a stock count stays within 32 bits, so sums of them (a cart's total, stock given back) fit 64-bit
# columns.
MAX_AMOUNT = 2**31 - 1
# A charge fits the signed 64-bit column payments keeps it in.
MAX_CHARGE_CENTS = 2**63 - 1

# Pages of a listing: `limit` from 1 to 100, `offset` from 0.
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100
MAX_OFFSET = MAX_AMOUNT

# --- text -------------------------------------------------------------------------------------------------------

PRODUCT_NAME_MAX_LENGTH = 200
PRODUCT_DESCRIPTION_MAX_LENGTH = 2000
SEARCH_MAX_LENGTH = 200  # a listing's `q`
EMAIL_MAX_LENGTH = 254  # RFC 5321's limit on a forward path
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128

# --- cards ------------------------------------------------------------------------------------------------------

# ASCII digits only (str.isdigit() would also take "²" or Arabic-Indic digits); payments also checks Luhn.
CARD_NUMBER_PATTERN = r"^[0-9]{12,19}$"
_CARD_NUMBER = re.compile(CARD_NUMBER_PATTERN)


def is_card_number_shape(value):
    """Whether `value` is a string of 12 to 19 ASCII digits (the Luhn check is payments')."""
    return isinstance(value, str) and _CARD_NUMBER.fullmatch(value) is not None


# --- call ids ---------------------------------------------------------------------------------------------------

# The id a caller gives one write call (services.common.calls): the gateway sends a UUID or a SHA-256 in hex.
CALL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CALL_ID_REASON = "must be 1 to 64 characters of A-Z a-z 0-9 - _"
_CALL_ID = re.compile(CALL_ID_PATTERN)


def validate_call_id(value):
    """`value` if it is None (no call id) or a call id; ValidationFailed on `call_id` otherwise."""
    if value is not None and not (isinstance(value, str) and _CALL_ID.fullmatch(value)):
        raise ValidationFailed.field("call_id", CALL_ID_REASON)
    return value
